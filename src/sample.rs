//! Deterministic synthetic fleets (`kfleet gen-fleet`): real kernel identities plus realistic
//! variants, a Zipf-like node distribution, a few unsupported, invalid and bad rows, and a
//! matching GitHub release listing.

use crate::artifacts::AssetTemplate;
use crate::artifacts::{Release, ReleaseAsset};
use crate::identity::KernelIdentity;
use crate::report::{ReportError, write_atomic, write_atomic_with};
use crate::text::Cause;
use chrono::{DateTime, Duration, TimeZone, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

const REAL_KERNELS: &str = include_str!("../assets/real-kernels.csv");
/// Zipf exponent: a few kernels run most nodes, hundreds run a handful.
const ZIPF_S: f64 = 1.1;

#[derive(Clone, Debug)]
pub struct FleetSpec {
    pub nodes: u64,
    pub seed: u64,
    /// Distinct valid identities; default grows with the square root of the node count.
    pub identities: Option<usize>,
    pub template: AssetTemplate,
    pub repo: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFleet {
    pub nodes: u64,
    pub identities: usize,
    pub bad_rows: u64,
    pub releases: usize,
}

/// The real identities shipped with kfleet (btfhub-archive, Falco, kernel-crawler).
pub fn real_identities() -> Vec<KernelIdentity> {
    REAL_KERNELS
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            KernelIdentity::parse(f.first()?, f.get(1)?, f.get(2)?, f.get(3)?).ok()
        })
        .collect()
}

/// Replaces the ABI (or, for `+debN` kernels, the patch level) with `n`: a kernel of the same
/// family and shape that the real lists did not hold.
fn mutate(kernel: &str, n: u32) -> String {
    let bytes = kernel.as_bytes();
    let start = if kernel.contains("+deb") {
        kernel.match_indices('.').nth(1).map(|(i, _)| i + 1)
    } else {
        kernel.find('-').map(|i| {
            let after = i + 1;
            if kernel[after..].starts_with("0.") {
                kernel[after + 2..]
                    .find(|c: char| c.is_ascii_digit())
                    .map(|j| {
                        let k = after + 2 + j;
                        // `0.deb10.30` and `0.bpo.6`: skip the release marker's digits too.
                        let rest = &kernel[k..];
                        let end = rest
                            .find(|c: char| !c.is_ascii_digit())
                            .unwrap_or(rest.len());
                        if rest[end..].starts_with('.') {
                            k + end + 1
                        } else {
                            k
                        }
                    })
                    .unwrap_or(after)
            } else {
                after
            }
        })
    };
    let Some(start) = start else {
        return kernel.to_string();
    };
    let end = bytes[start..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |p| start + p);
    format!("{}{}{}", &kernel[..start], n, &kernel[end..])
}

fn catalog(rng: &mut fastrand::Rng, wanted: usize) -> Vec<KernelIdentity> {
    let mut real = real_identities();
    rng.shuffle(&mut real);
    let mut seen: HashSet<String> = real.iter().map(KernelIdentity::key).collect();
    let mut out: Vec<KernelIdentity> = real.iter().take(wanted).cloned().collect();
    let mut attempts = 0usize;
    while out.len() < wanted && attempts < wanted * 50 {
        attempts += 1;
        let base = &real[rng.usize(..real.len())];
        let kernel = mutate(&base.kernel_version, rng.u32(1..100_000));
        let Ok(id) = KernelIdentity::parse(
            base.distribution.as_str(),
            &base.distro_version,
            base.architecture.as_str(),
            &kernel,
        ) else {
            continue;
        };
        if seen.insert(id.key()) {
            out.push(id);
        }
    }
    out
}

/// Identities a real fleet also holds but kfleet cannot build: (distribution, version, arch, kernel).
const UNSUPPORTED: [[&str; 4]; 3] = [
    ["bottlerocket", "1.26.1", "x86_64", "6.1.112"],
    ["rhel", "9.4", "x86_64", "5.14.0-427.13.1.el9_4.x86_64"],
    ["ubuntu", "22.04", "ppc64le", "5.15.0-91-generic"],
];
/// Rows whose fields contradict each other, as inventories collected by hand do.
const INVALID: [[&str; 4]; 3] = [
    ["fedora", "39", "x86_64", "6.2.9-300.fc38.x86_64"],
    ["debian", "12", "aarch64", "6.1.0-18-amd64"],
    [
        "amazonlinux",
        "2",
        "x86_64",
        "6.1.66-91.160.amzn2023.x86_64",
    ],
];

fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (0..n)
        .map(|r| {
            acc += 1.0 / ((r + 1) as f64).powf(ZIPF_S);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn asset(repo: &str, tag: &str, name: String, id: u64, at: DateTime<Utc>) -> ReleaseAsset {
    ReleaseAsset {
        id: Some(id),
        size: Some(40_000 + id % 9_000),
        browser_download_url: Some(format!(
            "https://github.com/{repo}/releases/download/{tag}/{name}"
        )),
        digest: Some(format!("sha256:{}", sha256_hex(&name))),
        updated_at: Some(at),
        name,
    }
}

/// Writes `fleet.csv` and `releases.json` into `out`.
pub fn generate(spec: &FleetSpec, out: &Path) -> Result<GeneratedFleet, ReportError> {
    generate_with(spec, out, &|_| {})
}

/// [`generate`], calling `progress` with the nodes written so far every 65,536 nodes.
pub fn generate_with(
    spec: &FleetSpec,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<GeneratedFleet, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.display().to_string(),
        source,
    })?;
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let wanted = spec
        .identities
        .unwrap_or_else(|| ((spec.nodes as f64).sqrt() * 4.0).clamp(20.0, 200_000.0) as usize);
    let ids = catalog(&mut rng, wanted);
    let cdf = zipf_cdf(ids.len());
    let bad_every = (spec.nodes / 5).clamp(1, 20_000);

    let mut bad_rows = 0u64;
    let mut line_rng = fastrand::Rng::with_seed(spec.seed ^ 0x5eed);
    write_atomic_with(&out.join("fleet.csv"), |w| {
        writeln!(
            w,
            "node,distribution,distro_version,architecture,kernel_version"
        )?;
        for i in 0..spec.nodes {
            if i % (1 << 16) == 0 {
                progress(i);
            }
            let node = format!("node-{i:07}");
            if i % bad_every == bad_every / 2 {
                bad_rows += 1;
                // A node whose inventory agent failed to report its kernel.
                let id = &ids[line_rng.usize(..ids.len())];
                writeln!(
                    w,
                    "{node},{},{},{},",
                    id.distribution, id.distro_version, id.architecture
                )?;
                continue;
            }
            let roll = line_rng.f64();
            if roll < 0.004 {
                let [d, v, a, k] = UNSUPPORTED[line_rng.usize(..UNSUPPORTED.len())];
                writeln!(w, "{node},{d},{v},{a},{k}")?;
                continue;
            }
            if roll < 0.006 {
                let [d, v, a, k] = INVALID[line_rng.usize(..INVALID.len())];
                writeln!(w, "{node},{d},{v},{a},{k}")?;
                continue;
            }
            let u = line_rng.f64();
            let rank = cdf.partition_point(|c| *c < u).min(ids.len() - 1);
            let id = &ids[rank];
            // Some agents report dpkg architecture names; kfleet normalises them.
            let arch = if line_rng.f64() < 0.03 {
                id.architecture.debian_name()
            } else {
                id.architecture.as_str()
            };
            writeln!(
                w,
                "{node},{},{},{arch},{}",
                id.distribution, id.distro_version, id.kernel_version
            )?;
        }
        Ok(())
    })?;

    let releases = releases(spec, &ids, &mut rng);
    let json =
        serde_json::to_vec_pretty(&releases).map_err(|e| ReportError::Encode(Cause::of(e)))?;
    write_atomic(&out.join("releases.json"), &json)?;
    Ok(GeneratedFleet {
        nodes: spec.nodes,
        identities: ids.len(),
        bad_rows,
        releases: releases.len(),
    })
}

/// Three releases: the current one (most of the head built), the previous one (less), and a
/// newer prerelease that default selection skips.
fn releases(spec: &FleetSpec, ids: &[KernelIdentity], rng: &mut fastrand::Rng) -> Vec<Release> {
    let base = Utc
        .with_ymd_and_hms(2026, 10, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    let module = spec.template.module();
    let plan = [
        ("v0.6.0-rc.1", true, 60, 0.05),
        ("v0.5.16", false, 30, 1.0),
        ("v0.5.15", false, 0, 0.6),
    ];
    let mut next_id = 1000u64;
    let mut out = Vec::new();
    for (rel_no, (tag, prerelease, day, scale)) in plan.into_iter().enumerate() {
        let at = base + Duration::days(day);
        let mut assets = Vec::new();
        for (rank, id) in ids.iter().enumerate() {
            let share = rank as f64 / ids.len() as f64;
            let p = if share < 0.3 {
                0.92
            } else if share < 0.6 {
                0.5
            } else {
                0.15
            };
            if rng.f64() < p * scale {
                next_id += 1;
                assets.push(asset(
                    &spec.repo,
                    tag,
                    spec.template.render(id, tag),
                    next_id,
                    at,
                ));
            }
        }
        // Speculative builds for kernels no node runs: the unused artifacts.
        let extra = (ids.len() / 30).max(2);
        for _ in 0..extra {
            let base_id = &ids[rng.usize(..ids.len())];
            let kernel = mutate(&base_id.kernel_version, rng.u32(6000..9000));
            if let Ok(id) = KernelIdentity::parse(
                base_id.distribution.as_str(),
                &base_id.distro_version,
                base_id.architecture.as_str(),
                &kernel,
            ) {
                next_id += 1;
                assets.push(asset(
                    &spec.repo,
                    tag,
                    spec.template.render(&id, tag),
                    next_id,
                    at,
                ));
            }
        }
        for name in [
            "SHA256SUMS".to_string(),
            format!("{module}-{tag}-source.tar.gz"),
        ] {
            next_id += 1;
            assets.push(asset(&spec.repo, tag, name, next_id, at));
        }
        out.push(Release {
            id: Some(500 + rel_no as u64),
            tag_name: tag.to_string(),
            name: Some(format!("{module} {tag}")),
            draft: false,
            prerelease,
            created_at: Some(at - Duration::hours(2)),
            published_at: Some(at),
            html_url: Some(format!(
                "https://github.com/{}/releases/tag/{tag}",
                spec.repo
            )),
            immutable: false,
            assets,
        });
    }
    out
}

/// Rewrites a generated fleet CSV as Parquet (every column a string, an empty field null, as
/// inventories export them), atomically, one row group per million rows: memory stays bounded
/// at any fleet size.
pub fn csv_to_parquet(csv: &Path, parquet: &Path) -> Result<(), ReportError> {
    use polars::prelude::*;
    const ROWS_PER_GROUP: usize = 1_000_000;
    let failed =
        |e: &dyn std::fmt::Display| ReportError::Encode(format!("{}: {e}", csv.display()).into());
    let mut rdr = ::csv::Reader::from_path(csv).map_err(|e| failed(&e))?;
    let names: Vec<PlSmallStr> = rdr
        .headers()
        .map_err(|e| failed(&e))?
        .iter()
        .map(PlSmallStr::from)
        .collect();
    let schema: Schema = names
        .iter()
        .map(|n| Field::new(n.clone(), DataType::String))
        .collect();
    let io = |e: PolarsError| std::io::Error::other(e.to_string());
    write_atomic_with(parquet, |w| {
        let mut writer = ParquetWriter::new(w).batched(&schema).map_err(io)?;
        let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
        let mut rows = 0usize;
        let mut record = ::csv::StringRecord::new();
        let mut flush = |columns: &mut Vec<Vec<Option<String>>>| -> std::io::Result<()> {
            let frame = DataFrame::new_infer_height(
                names
                    .iter()
                    .zip(columns.iter_mut())
                    .map(|(n, c)| Column::new(n.clone(), std::mem::take(c)))
                    .collect(),
            )
            .map_err(io)?;
            writer.write_batch(&frame).map_err(io)
        };
        while rdr
            .read_record(&mut record)
            .map_err(std::io::Error::other)?
        {
            for (i, column) in columns.iter_mut().enumerate() {
                let field = record.get(i).unwrap_or_default();
                column.push((!field.is_empty()).then(|| field.to_string()));
            }
            rows += 1;
            if rows == ROWS_PER_GROUP {
                flush(&mut columns)?;
                rows = 0;
            }
        }
        if rows > 0 {
            flush(&mut columns)?;
        }
        writer.finish().map(|_| ()).map_err(io)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_keep_the_family_shape() {
        assert_eq!(mutate("5.15.0-91-generic", 7), "5.15.0-7-generic");
        assert_eq!(
            mutate("5.10.0-0.deb10.30-amd64", 7),
            "5.10.0-0.deb10.7-amd64"
        );
        assert_eq!(mutate("4.19.0-0.bpo.6-amd64", 7), "4.19.0-0.bpo.7-amd64");
        assert_eq!(mutate("6.12.74+deb13+1-amd64", 7), "6.12.7+deb13+1-amd64");
        assert_eq!(
            mutate("5.14.0-427.13.1.el9_4.x86_64", 7),
            "5.14.0-7.13.1.el9_4.x86_64"
        );
    }
}
