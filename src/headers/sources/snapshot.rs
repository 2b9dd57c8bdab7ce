//! `snapshot`: snapshot.debian.org's machine-readable API, `/mr/binary/{package}/` to its
//! versions, their files, and `/file/{sha1}`.

use super::{Ctx, api_bases};
use crate::headers::{Checksum, HeaderPackage};

/// Where the versions of a binary package are listed.
pub(super) fn binary_url(base: &str, package: &str) -> String {
    format!("{base}/mr/binary/{package}/")
}

/// A Debian version as it may appear in a URL path: `[0-9A-Za-z.+~:-]`, nothing else.
fn plain_version(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
}

async fn snapshot_binary(ctx: &mut Ctx<'_>, base: &str, package: &str) -> Option<HeaderPackage> {
    let versions = ctx.json(&binary_url(base, package)).await.ok()?;
    let version = versions["result"]
        .as_array()?
        .first()?
        .get("binary_version")?
        .as_str()?
        .to_string();
    if !plain_version(&version) {
        ctx.outcome(format!("refusing the version {version:?} the API gave"));
        return None;
    }
    let files = ctx
        .json(&format!(
            "{base}/mr/binary/{package}/{version}/binfiles?fileinfo=1"
        ))
        .await
        .ok()?;
    let arch = &ctx.parts.deb_arch;
    let entry = files["result"].as_array()?.iter().find(|f| {
        let a = f["architecture"].as_str().unwrap_or("");
        a == arch || a == "all"
    })?;
    let hash = entry["hash"].as_str()?.to_ascii_lowercase();
    if hash.len() != 40 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        ctx.outcome(format!("refusing the file hash {hash:?} the API gave"));
        return None;
    }
    let name = files["fileinfo"][&hash]
        .as_array()
        .and_then(|i| i.first())
        .and_then(|i| i["name"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{package}_{version}_{arch}.deb"));
    Some(HeaderPackage {
        name,
        url: format!("{base}/file/{hash}"),
        checksum: Some(Checksum {
            algorithm: "sha1".into(),
            hex: hash,
        }),
        vouch: None,
    })
}

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let p = ctx.parts.clone();
    let bases = api_bases(ctx.source, &p);
    for base in bases {
        let Some(main) = snapshot_binary(ctx, &base, &format!("linux-headers-{}", p.kernel)).await
        else {
            continue;
        };
        let Some(common) =
            snapshot_binary(ctx, &base, &format!("linux-headers-{}-common", p.abi)).await
        else {
            continue;
        };
        let mut out = vec![main, common];
        let series = p
            .version
            .rsplit_once('.')
            .map_or(p.version.as_str(), |(s, _)| s)
            .to_string();
        for kbuild in [
            format!("linux-kbuild-{}", p.abi),
            format!("linux-kbuild-{series}"),
        ] {
            if let Some(k) = snapshot_binary(ctx, &base, &kbuild).await {
                out.push(k);
                break;
            }
        }
        return Some(out);
    }
    None
}
