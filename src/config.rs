//! `kfleet.toml`: found in the working directory, then `$XDG_CONFIG_HOME/kfleet/`; `--config`
//! names one explicitly. Flags and `KFLEET_*` environment variables override it.

use crate::text::Cause;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Module name used in asset names.
    pub module: Option<String>,
    /// Asset naming template.
    pub asset_template: Option<String>,
    /// Share of nodes the head holds, 0 < x <= 1.
    pub head_share: Option<f64>,
    /// Node coverage the batch plan aims for, in percent.
    pub target: Option<f64>,
    /// Repository holding the driver's releases, `OWNER/NAME`.
    pub repo: Option<String>,
    /// GitHub API base URL (GitHub Enterprise: `https://HOST/api/v3`; the sandbox's URL).
    pub api_url: Option<String>,
    /// An OCI repository holding the drivers instead of the releases (`oci://HOST/NS/NAME`).
    pub store: Option<String>,
    /// Workflow file that builds one identity.
    pub workflow: Option<String>,
    /// Git ref the workflow runs on.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Holds the build state (kfleet.db) and caches.
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a build may take before it is timed out, e.g. "15m".
    pub deadline: Option<String>,
    /// Dashboard keys, `[keys]`: any of down up filter sort reverse dispatch batch export
    /// refresh help quit cancel copy open, each one character (checked even where the dashboard is not
    /// built in).
    pub keys: Option<KeyMap>,
    /// Credentials the build workflow holds as repository secrets (`ubuntu-pro`,
    /// `rhel-entitlement`, `suse-registration`): the kernels only they serve are dispatched like
    /// any other, though this machine holds none of them.
    pub build_credentials: Option<Vec<String>>,
}

/// Single-character keys of the dashboard; `[keys]` in kfleet.toml overrides any of them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyMap {
    pub down: char,
    pub up: char,
    pub filter: char,
    pub sort: char,
    pub reverse: char,
    pub dispatch: char,
    pub batch: char,
    pub export: char,
    pub refresh: char,
    pub help: char,
    pub quit: char,
    pub cancel: char,
    /// Copy the selected identity (or run URL) to the clipboard, over SSH too (OSC 52).
    pub copy: char,
    /// Open the selected run in the browser.
    pub open: char,
    /// In a confirmation (Enter too).
    pub confirm: char,
}

impl Default for KeyMap {
    fn default() -> Self {
        Self {
            down: 'j',
            up: 'k',
            filter: '/',
            sort: 's',
            reverse: 'S',
            dispatch: 'd',
            batch: 'D',
            export: 'e',
            refresh: 'r',
            help: '?',
            quit: 'q',
            cancel: 'x',
            copy: 'y',
            open: 'o',
            confirm: 'y',
        }
    }
}

impl KeyMap {
    pub fn all(&self) -> [(&'static str, char); 14] {
        [
            ("down", self.down),
            ("up", self.up),
            ("filter", self.filter),
            ("sort", self.sort),
            ("reverse", self.reverse),
            ("dispatch", self.dispatch),
            ("batch", self.batch),
            ("export", self.export),
            ("refresh", self.refresh),
            ("help", self.help),
            ("quit", self.quit),
            ("cancel", self.cancel),
            ("copy", self.copy),
            ("open", self.open),
        ]
    }

    /// Two actions on one key, or a key the views own (1-5), is an error naming both. The
    /// confirm key only counts in a confirmation, so it may share a key with the others.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.confirm, '1'..='5') || self.confirm.is_control() {
            return Err(format!(
                "keys.confirm = '{}' is reserved (1-5 switch views)",
                self.confirm
            ));
        }
        let all = self.all();
        for (i, (name, key)) in all.iter().enumerate() {
            if matches!(key, '1'..='5') || key.is_control() {
                return Err(format!(
                    "keys.{name} = '{key}' is reserved (1-5 switch views)"
                ));
            }
            if let Some((other, _)) = all[i + 1..].iter().find(|(_, k)| k == key) {
                return Err(format!("keys.{name} and keys.{other} are both '{key}'"));
            }
        }
        Ok(())
    }
}

pub const DEFAULT_MODULE: &str = "kdriver";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Invalid { path: String, source: Cause },
}

/// Where the config is looked for when `--config` is not given.
pub fn default_locations() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("kfleet.toml")];
    use crate::environment::{HOME, XDG_CONFIG_HOME, path};
    let xdg = path(XDG_CONFIG_HOME).or_else(|| path(HOME).map(|h| h.join(".config")));
    if let Some(dir) = xdg {
        out.push(dir.join("kfleet").join("kfleet.toml"));
    }
    out
}

impl Config {
    /// Loads `explicit` (which must exist), else the first default location that exists, else
    /// the defaults. Returns the config and the file it came from.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => default_locations().into_iter().find(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok((Self::default(), None));
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: shown.clone(),
            source: Cause::from(message),
        })?;
        // A kfleet.toml found in the working directory may come with a checkout someone else
        // wrote: it must not send the GitHub token to its own host, point at its own repository,
        // name where files are written (asset names are file names on the node) or where state is.
        if explicit.is_none() && path == Path::new("kfleet.toml") {
            for (key, set) in [
                ("api_url", config.api_url.take().is_some()),
                ("repo", config.repo.take().is_some()),
                ("asset_template", config.asset_template.take().is_some()),
                ("state_dir", config.state_dir.take().is_some()),
            ] {
                if set {
                    tracing::warn!(
                        "{shown}: ignoring {key} from a kfleet.toml found in the working directory; name the file with --config (or KFLEET_CONFIG) to trust it"
                    );
                }
            }
        }
        Ok((config, Some(path)))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(h) = config.head_share
            && !(h > 0.0 && h <= 1.0)
        {
            return Err(format!(
                "head_share = {h}: must be above 0 and at most 1 (0.90 means 90%)"
            ));
        }
        if let Some(t) = config.target
            && !(t > 0.0 && t <= 100.0)
        {
            return Err(format!(
                "target = {t}: must be a percentage above 0 and at most 100"
            ));
        }
        if let Some(keys) = &config.keys {
            keys.validate()?;
        }
        if let Some(d) = &config.deadline {
            humantime::parse_duration(d).map_err(|e| {
                format!("deadline = \"{d}\": {e}; write it like \"15m\" or \"90s\"")
            })?;
        }
        Ok(config)
    }
}

/// `$XDG_STATE_HOME/kfleet`, else `~/.local/state/kfleet`.
pub fn default_state_dir() -> std::path::PathBuf {
    use crate::environment::{HOME, XDG_STATE_HOME, path};
    path(XDG_STATE_HOME)
        .or_else(|| path(HOME).map(|h| h.join(".local/state")))
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("kfleet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_explained() {
        assert!(
            Config::parse("modul = \"x\"")
                .unwrap_err()
                .contains("unknown field `modul`")
        );
        assert!(
            Config::parse("head_share = 90")
                .unwrap_err()
                .contains("at most 1")
        );
        assert!(
            Config::parse("target = 0")
                .unwrap_err()
                .contains("percentage")
        );
        let c = Config::parse("module = \"falco\"\nhead_share = 0.8\ntarget = 95\n").unwrap();
        assert_eq!(c.module.as_deref(), Some("falco"));
        let c = Config::parse("[keys]\ndispatch = \"b\"\n").unwrap();
        assert_eq!(c.keys.unwrap().dispatch, 'b');
        assert!(
            Config::parse("[keys]\ndispatch = \"q\"\n")
                .unwrap_err()
                .contains("keys.dispatch and keys.quit are both 'q'")
        );
        assert!(
            Config::parse("[keys]\nexport = \"2\"\n")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            Config::parse("[keys]\nlaunch = \"x\"\n")
                .unwrap_err()
                .contains("unknown field `launch`")
        );
    }
}
