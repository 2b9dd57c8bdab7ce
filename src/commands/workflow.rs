//! `kfleet workflow init`: the GitHub Actions workflows that build the driver.

use crate::report::write_atomic;
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::path::PathBuf;
use std::process::ExitCode;

/// The files `workflow init` writes: the workflows, then the build script they run, which goes
/// to `.github/kfleet/` beside the workflows directory.
pub(crate) const WORKFLOWS: [(&str, &str); 2] = [
    (
        "build-driver.yml",
        include_str!("../../assets/workflows/build-driver.yml"),
    ),
    (
        "build-batch.yml",
        include_str!("../../assets/workflows/build-batch.yml"),
    ),
];

pub(crate) const BUILD_SCRIPT: &str = include_str!("../../assets/build-module.sh");

pub(crate) fn workflow_init(dir: &std::path::Path, force: bool) -> Result<ExitCode> {
    let github = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut targets: Vec<(PathBuf, &str)> = WORKFLOWS
        .iter()
        .map(|(name, text)| (dir.join(name), *text))
        .collect();
    targets.push((github.join("kfleet").join("build-module.sh"), BUILD_SCRIPT));
    if !force {
        let existing: Vec<String> = targets
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); pass --force to replace",
                existing.join(", ")
            );
        }
    }
    for (path, text) in &targets {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_atomic(path, text.as_bytes())?;
        #[cfg(unix)]
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        outln!("wrote {}", path.display());
    }
    tracing::info!(
        "set repository variables KFLEET_MODULE (module name), KFLEET_MODULE_DIR (where its Kbuild is) and, if needed, KFLEET_RUNNER_X86_64 / KFLEET_RUNNER_AARCH64"
    );
    Ok(ExitCode::SUCCESS)
}
