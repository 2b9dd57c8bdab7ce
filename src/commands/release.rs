//! `kfleet release`: the build job's calls on the driver's release (is the asset there; upload
//! the artifact and its checksum), through the same client as every other GitHub call.

use super::prelude::*;

pub(crate) fn release_cmd(cmd: ReleaseCommand, config: &Config) -> Result<ExitCode> {
    match cmd {
        ReleaseCommand::Asset { tag, name, forge } => {
            let client = forge.client(config)?;
            let found = runtime()?.block_on(client.find_asset(&tag, &name))?;
            if super::json_wanted() {
                super::print_json(&serde_json::json!({
                    "tag": tag, "name": name, "present": found.is_some(), "asset": found,
                }))?;
            } else {
                outln!("{}", if found.is_some() { "present" } else { "absent" });
            }
        }
        ReleaseCommand::Upload { tag, files, forge } => {
            let client = forge.client(config)?;
            // Every file is read (and its name checked) before the first upload starts.
            let mut uploads = Vec::with_capacity(files.len());
            for path in &files {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{}: not a file name", path.display()))?
                    .to_string();
                let size = std::fs::metadata(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
                    .len();
                if size > crate::forge::MAX_UPLOAD {
                    bail!(
                        "{}: {size} bytes; a release asset holds at most {}",
                        path.display(),
                        crate::forge::MAX_UPLOAD
                    );
                }
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                uploads.push((name, bytes::Bytes::from(bytes)));
            }
            let mut uploaded = Vec::new();
            for (name, bytes) in uploads {
                let asset = runtime()?.block_on(client.upload_asset(&tag, &name, bytes))?;
                if super::json_wanted() {
                    uploaded.push(asset);
                    continue;
                }
                outln!(
                    "uploaded {} to {tag} ({} bytes{})",
                    asset.name,
                    asset.size.unwrap_or_default(),
                    asset.digest.map(|d| format!(", {d}")).unwrap_or_default()
                );
            }
            if super::json_wanted() {
                super::print_json(&serde_json::json!({"tag": tag, "uploaded": uploaded}))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
