//! `koji`: a Koji hub asked for the kernel's build (`getBuild`) and its RPMs (`listRPMs`) over
//! XML-RPC; the packages are then under the hub's file root.

use super::xmlrpc::{XmlRpc, xmlrpc_call, xmlrpc_response};
use super::{Ctx, Outcome, describe, expanded};
use crate::headers::HeaderPackage;
use crate::headers::parts::KernelParts;
use crate::headers::spec::{Protocol, SourceSpec};
use std::time::Instant;

async fn koji_call(
    ctx: &mut Ctx<'_>,
    hub: &str,
    method: &str,
    params: &[XmlRpc],
) -> Outcome<XmlRpc> {
    let started = Instant::now();
    let label = format!(
        "{hub} {method}({})",
        params
            .iter()
            .map(|p| match p {
                XmlRpc::Str(s) => s.clone(),
                XmlRpc::Int(i) => i.to_string(),
                _ => "…".into(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let result = async {
        let r = ctx
            .http
            .post(hub)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(xmlrpc_call(method, params))
            .send()
            .await
            .map_err(describe)?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status().as_u16()));
        }
        let body = r.bytes().await.map_err(describe)?;
        xmlrpc_response(&body)
    }
    .await;
    let outcome = match &result {
        Ok(XmlRpc::Nil) => "no such build".to_string(),
        Ok(_) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    ctx.record(&label, started, &outcome);
    result
}

/// Per hub, the build to ask for: `{srpm}-{version}-{release}` (`kernel-rt-4.18.0-...` for EL 8's
/// real-time kernels).
pub(super) fn builds(spec: &SourceSpec, parts: &KernelParts) -> Vec<(String, String)> {
    let nvr = format!("{}-{}-{}", parts.srpm, parts.version, parts.release);
    expanded(spec, parts)
        .into_iter()
        .map(|hub| (hub, nvr.clone()))
        .collect()
}

pub(super) async fn resolve(ctx: &mut Ctx<'_>) -> Option<Vec<HeaderPackage>> {
    let Protocol::Koji { files, .. } = &ctx.source.protocol else {
        return None;
    };
    let files = ctx.parts.expand(files);
    let p = ctx.parts.clone();
    let wanted = ctx.source.rpm_packages_for(&p);
    for (hub, nvr) in builds(ctx.source, &p) {
        let Ok(build) = koji_call(ctx, &hub, "getBuild", &[XmlRpc::Str(nvr.clone())]).await else {
            continue;
        };
        let Some(XmlRpc::Int(build_id)) = build.get("id").cloned() else {
            continue;
        };
        let Ok(XmlRpc::Array(rpms)) =
            koji_call(ctx, &hub, "listRPMs", &[XmlRpc::Int(build_id)]).await
        else {
            continue;
        };
        let has = |name: &str| {
            rpms.iter().any(|r| {
                r.get("name").and_then(XmlRpc::str) == Some(name)
                    && r.get("arch").and_then(XmlRpc::str) == Some(p.arch.as_str())
            })
        };
        let absent: Vec<&str> = wanted
            .iter()
            .map(String::as_str)
            .filter(|w| !has(w))
            .collect();
        if !absent.is_empty() {
            ctx.outcome(format!(
                "build {nvr} has no {} for {}",
                absent.join(", "),
                p.arch
            ));
            continue;
        }
        ctx.outcome(format!("found {}", wanted.join(", ")));
        // Koji's file layout: packages/NAME/VERSION/RELEASE/ARCH/ holds the build as built
        // (unsigned); packages/NAME/VERSION/RELEASE/data/signed/KEYID/ARCH/ the copies signed
        // with a key. The name is the one asked for, never one read from the answer.
        let build = format!(
            "{}/packages/{}/{}/{}",
            files.trim_end_matches('/'),
            p.srpm,
            p.version,
            p.release
        );
        let mut out = Vec::new();
        for w in &wanted {
            let file = format!("{}.rpm", p.rpm_file_stem(w));
            let url = match signed_copy(ctx, &build, &file).await {
                Some(url) => url,
                None => format!("{build}/{}/{file}", p.arch),
            };
            out.push(HeaderPackage {
                url,
                name: file,
                checksum: None,
                vouch: None,
            });
        }
        return Some(out);
    }
    None
}

/// The copy of `file` signed with a key of the source's keyring, where the hub's file root has
/// one (probed per key, primary keys first); `None` without a keyring or a signed copy.
async fn signed_copy(ctx: &mut Ctx<'_>, build: &str, file: &str) -> Option<String> {
    let ids = ctx.keyring.as_ref()?.short_ids();
    let arch = ctx.parts.arch.clone();
    for id in ids {
        let url = format!("{build}/data/signed/{id}/{arch}/{file}");
        if ctx.probe(&url).await.is_ok() {
            return Some(url);
        }
        ctx.outcome(format!("no copy signed with {id}"));
    }
    None
}
