//! `url`: explicit package URLs, probed with HEAD (a one-byte ranged GET where HEAD is refused).

use super::{Ctx, url_templates_for};
use crate::headers::HeaderPackage;
use crate::headers::parts::KernelParts;
use crate::headers::spec::SourceSpec;

/// Per wanted package, the URLs that may hold it, in order. A template naming `{sigkey}` (Koji's
/// signed copies, `data/signed/{sigkey}/`) stands for one URL per key of the source's keyring,
/// and for none where the source has no keyring.
pub(super) fn candidates(spec: &SourceSpec, parts: &KernelParts) -> Vec<(String, Vec<String>)> {
    let sigkeys: Vec<String> =
        if spec.urls.iter().any(|u| u.contains("{sigkey}")) && !spec.unverified {
            crate::headers::trust::keyring_for(spec, parts)
                .map(|k| k.short_ids())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
    spec.rpm_packages_for(parts)
        .into_iter()
        .enumerate()
        .map(|(i, package)| {
            let urls = url_templates_for(spec, &package, i == 0)
                .iter()
                .flat_map(|t| {
                    let t = parts.expand(t);
                    if t.contains("{sigkey}") {
                        sigkeys.iter().map(|k| t.replace("{sigkey}", k)).collect()
                    } else {
                        vec![t]
                    }
                })
                .collect();
            (package, urls)
        })
        .collect()
}

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let mut out = Vec::new();
    for (_, urls) in candidates(ctx.source, ctx.parts) {
        let mut hit = None;
        for url in urls {
            if ctx.probe(&url).await.is_ok() {
                hit = Some(url);
                break;
            }
        }
        // Every package must be there; the first one missing ends this source.
        let url = hit?;
        out.push(HeaderPackage {
            name: url.rsplit('/').next().unwrap_or(&url).to_string(),
            url,
            checksum: None,
            vouch: None,
        });
    }
    Some(out)
}
