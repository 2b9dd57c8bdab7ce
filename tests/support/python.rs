//! A Python virtual environment with pinned packages from PyPI, for tests that check kfleet with
//! clients it did not write. Made once per target directory (under `CARGO_TARGET_TMPDIR`) and
//! reused while its requirements are unchanged; built beside its final place and renamed into it,
//! so an interrupted install is never taken for a finished one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static BUILDING: Mutex<()> = Mutex::new(());

/// The Python interpreter of the environment `name` with exactly `requirements` installed.
pub fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!("py-{name}"));
    let python = dir.join("bin/python");
    let wanted = requirements.join("\n");
    let stamp = "kfleet-requirements.txt";
    if std::fs::read_to_string(dir.join(stamp)).is_ok_and(|s| s == wanted) && python.exists() {
        return python;
    }
    let building = root.join(format!("py-{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("python3 runs");
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&building));
    run(Command::new(building.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(requirements));
    std::fs::write(building.join(stamp), &wanted).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).unwrap();
    python
}
