//! `launchpad`: the Launchpad API's `getPublishedBinaries` for the headers packages of the
//! kernel's series and architecture, then `binaryFileUrls` for their files.

use super::{Ctx, api_bases};
use crate::headers::parts::KernelParts;
use crate::headers::{Checksum, HeaderPackage};

/// The query for a binary package's publications in the kernel's series and architecture.
pub(super) fn published_binaries_url(api: &str, name: &str, parts: &KernelParts) -> String {
    format!(
        "{api}/ubuntu/+archive/primary?ws.op=getPublishedBinaries&binary_name={name}&exact_match=true&distro_arch_series={api}/ubuntu/{}/{}",
        parts.codename, parts.deb_arch
    )
}

/// A Debian package name: `[a-z0-9][a-z0-9.+-]*`.
fn package_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '+' | '-'))
}

async fn launchpad_binary(
    ctx: &mut Ctx<'_>,
    api: &str,
    name: &str,
) -> Option<(HeaderPackage, String)> {
    let p = ctx.parts.clone();
    let listing = ctx
        .json(&published_binaries_url(api, name, &p))
        .await
        .ok()?;
    let entry = listing["entries"].as_array()?.first()?.clone();
    let source = entry["source_package_name"]
        .as_str()
        .unwrap_or("linux")
        .to_string();
    let self_link = entry["self_link"].as_str()?;
    // Follow only links into the same API, with a source package name that is one.
    if !self_link.starts_with(&format!("{api}/")) || !package_name(&source) {
        ctx.outcome(format!(
            "refusing the answer: self_link {self_link:?}, source package {source:?}"
        ));
        return None;
    }
    let urls = ctx
        .json(&format!(
            "{self_link}?ws.op=binaryFileUrls&include_meta=true"
        ))
        .await
        .ok()?;
    let first = urls.as_array()?.first()?;
    // include_meta gives {url, sha256, size}; without it the list holds plain URLs.
    let (url, sha256) = match first {
        serde_json::Value::String(u) => (u.clone(), None),
        other => (
            other["url"].as_str()?.to_string(),
            other["sha256"].as_str().map(str::to_string),
        ),
    };
    Some((
        HeaderPackage {
            name: url.rsplit('/').next().unwrap_or(&url).to_string(),
            url,
            checksum: sha256.map(|hex| Checksum {
                algorithm: "sha256".into(),
                hex,
            }),
            vouch: None,
        },
        source,
    ))
}

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let p = ctx.parts.clone();
    let apis = api_bases(ctx.source, &p);
    for api in apis {
        let Some((main, source)) =
            launchpad_binary(ctx, &api, &format!("linux-headers-{}", p.kernel)).await
        else {
            continue;
        };
        // The architecture-independent half: linux-headers-ABI, or SOURCE-headers-ABI for
        // derived kernels (linux-aws-headers-5.15.0-1034, linux-gkeop-5.4-headers-5.4.0-1031).
        let common = if source == "linux" {
            format!("linux-headers-{}", p.abi)
        } else {
            format!("{source}-headers-{}", p.abi)
        };
        let Some((common, _)) = launchpad_binary(ctx, &api, &common).await else {
            continue;
        };
        return Some(vec![main, common]);
    }
    None
}
