//! The asset naming template, compiled to an anchored regex so it works in both directions:
//! identity -> asset name and asset name -> identity.

use crate::identity::{Checked, KernelIdentity, RawIdentity, check};
use regex::Regex;

pub const DEFAULT_ASSET_TEMPLATE: &str = "{module}-{driver_version}-{distribution}-{distro_version}-{architecture}-{kernel_version}.tar.xz";

const REQUIRED: [&str; 4] = [
    "distribution",
    "distro_version",
    "architecture",
    "kernel_version",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "asset template '{template}' uses unknown placeholder {{{name}}}; known: {{module}} {{driver_version}} {{distribution}} {{distro_version}} {{architecture}} {{kernel_version}}"
    )]
    UnknownPlaceholder { template: String, name: String },
    #[error(
        "asset template '{template}' lacks {{{name}}}; every identity field must be in the name"
    )]
    MissingPlaceholder {
        template: String,
        name: &'static str,
    },
    #[error("asset template '{template}' has an unclosed '{{'")]
    Unclosed { template: String },
    #[error("module name '{0}' may only hold letters, digits, '_' and '-'")]
    BadModule(String),
    #[error(
        "asset template '{template}' must make a plain file name: letters, digits and - . _ + ~ around the placeholders, not starting with '.' (it names the file written on the node)"
    )]
    NotAFileName { template: String },
}

#[derive(Clone, Debug)]
pub struct AssetTemplate {
    template: String,
    module: String,
    regex: Regex,
}

/// The identity fields read back from an asset name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetName {
    pub driver_version: Option<String>,
    pub checked: Checked,
}

enum Piece<'a> {
    Literal(&'a str),
    Field(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| TemplateError::Unclosed {
                template: template.to_string(),
            })?;
        out.push(Piece::Field(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    Ok(out)
}

impl AssetTemplate {
    pub fn compile(template: &str, module: &str) -> Result<Self, TemplateError> {
        if module.is_empty()
            || !module
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(TemplateError::BadModule(module.to_string()));
        }
        let mut pattern = String::from("^");
        let mut seen = Vec::new();
        if template.starts_with('.') {
            return Err(TemplateError::NotAFileName {
                template: template.to_string(),
            });
        }
        for piece in pieces(template)? {
            match piece {
                Piece::Literal(text) => {
                    if !text.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '+' | '~')
                    }) {
                        return Err(TemplateError::NotAFileName {
                            template: template.to_string(),
                        });
                    }
                    pattern.push_str(&regex::escape(text))
                }
                Piece::Field(name) => {
                    let group = match name {
                        "module" => regex::escape(module),
                        // Lazy: a tag may hold `-` (`v0.6.0-rc.1`); the fields after it decide where it ends.
                        "driver_version" => {
                            r"(?P<driver_version>[A-Za-z0-9][A-Za-z0-9._+-]*?)".into()
                        }
                        "distribution" => r"(?P<distribution>[a-z0-9]+)".into(),
                        "distro_version" => r"(?P<distro_version>[0-9]+(?:\.[0-9]+)*)".into(),
                        "architecture" => r"(?P<architecture>x86_64|aarch64)".into(),
                        "kernel_version" => r"(?P<kernel_version>[A-Za-z0-9._+~-]+)".into(),
                        other => {
                            return Err(TemplateError::UnknownPlaceholder {
                                template: template.to_string(),
                                name: other.to_string(),
                            });
                        }
                    };
                    seen.push(name.to_string());
                    pattern.push_str(&group);
                }
            }
        }
        pattern.push('$');
        if let Some(name) = REQUIRED.iter().find(|r| !seen.iter().any(|s| s == *r)) {
            return Err(TemplateError::MissingPlaceholder {
                template: template.to_string(),
                name,
            });
        }
        let regex = Regex::new(&pattern).map_err(|_| TemplateError::UnknownPlaceholder {
            template: template.to_string(),
            name: "(a placeholder used twice)".into(),
        })?;
        Ok(Self {
            template: template.to_string(),
            module: module.to_string(),
            regex,
        })
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    pub fn module(&self) -> &str {
        &self.module
    }

    /// The asset name for an identity and driver version.
    pub fn render(&self, identity: &KernelIdentity, driver_version: &str) -> String {
        self.template
            .replace("{module}", &self.module)
            .replace("{driver_version}", driver_version)
            .replace("{distribution}", identity.distribution.as_str())
            .replace("{distro_version}", &identity.distro_version)
            .replace("{architecture}", identity.architecture.as_str())
            .replace("{kernel_version}", &identity.kernel_version)
    }

    /// Reads an asset name back into identity fields; `None` when the name does not follow the
    /// template at all. The identity inside may still be invalid (see `checked.verdict`).
    pub fn parse(&self, name: &str) -> Option<AssetName> {
        let caps = self.regex.captures(name)?;
        let field = |n: &str| caps.name(n).map(|m| m.as_str()).unwrap_or("");
        let checked = check(&RawIdentity {
            distribution: field("distribution"),
            distro_version: field("distro_version"),
            architecture: field("architecture"),
            kernel_version: field("kernel_version"),
        });
        Some(AssetName {
            driver_version: caps.name("driver_version").map(|m| m.as_str().to_string()),
            checked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_family() {
        let t = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
        for key in [
            "ubuntu/22.04/x86_64/5.15.0-91-generic",
            "debian/13/aarch64/6.12.74+deb13+1-cloud-arm64",
            "fedora/40/aarch64/6.8.9-300.fc40.aarch64",
            "almalinux/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64",
            "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64",
        ] {
            let id = KernelIdentity::from_key(key).unwrap();
            let name = t.render(&id, "v0.5.16");
            let back = t.parse(&name).expect(&name);
            assert_eq!(back.driver_version.as_deref(), Some("v0.5.16"));
            assert_eq!(back.checked.identity(), Some(&id), "{name}");
        }
    }

    #[test]
    fn every_fields_alphabet_round_trips() {
        let t = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
        for (key, dv) in [
            ("ubuntu/22.04/x86_64/5.15.0-91-generic", "v0.6.0-rc.1"),
            ("debian/13/x86_64/6.12.74+deb13+1-amd64", "1.0+git.2_x-y"),
            ("fedora/40/aarch64/6.8.9-300.fc40.aarch64", "v2-beta-3"),
            ("centos/9/x86_64/5.14.0-362.el9.x86_64", "release-2026-11"),
        ] {
            crate::identity::check_driver_version(dv).unwrap();
            let id = KernelIdentity::from_key(key).unwrap();
            let name = t.render(&id, dv);
            let back = t.parse(&name).expect(&name);
            assert_eq!(back.driver_version.as_deref(), Some(dv), "{name}");
            assert_eq!(back.checked.identity(), Some(&id), "{name}");
        }
        for bad in ["", "-v1", "v1/../x", "a..b", "v1 2", "v1;rm"] {
            assert!(crate::identity::check_driver_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_module_or_suffix_does_not_match() {
        let t = AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "kdriver").unwrap();
        assert!(
            t.parse("other-v1-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.xz")
                .is_none()
        );
        assert!(
            t.parse("kdriver-v1-ubuntu-22.04-x86_64-5.15.0-91-generic.tar.gz")
                .is_none()
        );
        assert!(t.parse("SHA256SUMS").is_none());
    }

    #[test]
    fn bad_templates_are_explained() {
        let err = AssetTemplate::compile("{module}-{kernel}.ko", "m").unwrap_err();
        assert!(
            err.to_string().contains("unknown placeholder {kernel}"),
            "{err}"
        );
        let err = AssetTemplate::compile("{module}-{kernel_version}.ko", "m").unwrap_err();
        assert!(err.to_string().contains("lacks {distribution}"), "{err}");
        assert!(AssetTemplate::compile(DEFAULT_ASSET_TEMPLATE, "a/b").is_err());
    }
}
