//! Build environments (`assets/build-environments.toml`, embedded): for an identity, the
//! container image the build job compiles in, the commands that reach its repositories and
//! install the toolchain and the fetched headers, and the compilers the release ships. The plan
//! is what `kfleet build-plan` prints and `build-module.sh` runs. Images are pinned by the
//! digests a digests file holds (`kfleet images pin` writes it from the registries).

mod registry;

pub use registry::{Digests, RegistryError, parse_image, pin};

use crate::headers::{Chain, KernelParts};
use crate::identity::KernelIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Where these facts live, for messages that ask to extend them.
pub const DATA_FILE: &str = "assets/build-environments.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Environment {
    family: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    unsupported: Option<String>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    setup: Vec<String>,
    #[serde(default)]
    install_toolchain: String,
    #[serde(default)]
    install_headers: String,
    #[serde(default)]
    fix_headers: Option<String>,
    #[serde(default)]
    compilers: BTreeMap<String, String>,
    #[serde(default)]
    kernel_compilers: BTreeMap<String, String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    environment: Vec<Environment>,
}

fn parse(text: &str) -> Result<Vec<Environment>, String> {
    let file: DataFile = toml::from_str(text).map_err(|e| format!("{DATA_FILE}: {e}"))?;
    for (i, env) in file.environment.iter().enumerate() {
        let at = format!("{DATA_FILE}: environment {} ({})", i + 1, env.family);
        if env.unsupported.is_none()
            && (env.image.is_empty()
                || env.install_toolchain.is_empty()
                || env.install_headers.is_empty())
        {
            return Err(format!(
                "{at}: image, install_toolchain and install_headers are required"
            ));
        }
        for (major, provider) in &env.compilers {
            let words: Vec<&str> = provider.split_whitespace().collect();
            if major.parse::<u32>().is_err() || words.len() != 2 {
                return Err(format!(
                    "{at}: compilers.{major} = '{provider}': want a gcc major and \"PACKAGE COMMAND\""
                ));
            }
        }
    }
    Ok(file.environment)
}

static ENVIRONMENTS: LazyLock<Vec<Environment>> = LazyLock::new(|| {
    // Embedded and checked by the unit test below: a parse failure is a build defect.
    parse(include_str!("../../assets/build-environments.toml")).unwrap_or_default()
});

/// Dotted version numbers compared numerically (`8.10` after `8.9`); words compare as text.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split('.')
        .map(|p| (p.parse().unwrap_or(u64::MAX), p.to_string()))
        .collect()
}

impl Environment {
    fn matches(&self, family: &str, version: &str) -> bool {
        if self.family != family {
            return false;
        }
        if !self.versions.is_empty() {
            return self.versions.iter().any(|v| v == version);
        }
        let key = version_key(version);
        self.from
            .as_deref()
            .is_none_or(|from| version_key(from) <= key)
            && self.to.as_deref().is_none_or(|to| key <= version_key(to))
    }
}

/// A gcc the release ships: its major, the package that provides it, its command.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compiler {
    pub major: u32,
    pub package: String,
    pub command: String,
}

/// What the build of one identity runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildPlan {
    pub identity: String,
    /// The image, `@sha256:…` when pinned.
    pub image: String,
    pub pinned: bool,
    /// Commands that reach repositories that moved (archives, vaults).
    pub setup: Vec<String>,
    pub install_toolchain: String,
    /// The fetched packages are appended to it.
    pub install_headers: String,
    pub fix_headers: Option<String>,
    /// The packages the header chain fetches (its first source's names).
    pub header_packages: Vec<String>,
    pub compilers: Vec<Compiler>,
    /// The gcc major kernels of this series are built with, where the data knows it; the
    /// headers' CONFIG_CC_VERSION_TEXT decides at build time.
    pub expected_gcc: Option<u32>,
    pub notes: Vec<String>,
}

/// A plan, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Planned {
    Plan(BuildPlan),
    Unsupported { identity: String, reason: String },
}

/// The build plan for `id`, with the header packages `chain` would fetch and the image pinned by
/// `digests` where they hold it.
pub fn plan(id: &KernelIdentity, chain: &Chain, digests: &Digests) -> Planned {
    plan_in(&ENVIRONMENTS, id, chain, digests)
}

fn plan_in(
    environments: &[Environment],
    id: &KernelIdentity,
    chain: &Chain,
    digests: &Digests,
) -> Planned {
    let family = id.distribution.as_str();
    let unsupported = |reason: String| Planned::Unsupported {
        identity: id.key(),
        reason,
    };
    let Some(env) = environments
        .iter()
        .find(|e| e.matches(family, &id.distro_version))
    else {
        return unsupported(format!(
            "no build environment for {family} {}: add one to {DATA_FILE}",
            id.distro_version
        ));
    };
    if let Some(reason) = &env.unsupported {
        return unsupported(reason.clone());
    }
    let parts = KernelParts::of(id);
    let image = parts.expand(&env.image);
    let (image, pinned) = match digests.get(&image) {
        Some(digest) => (format!("{image}@{digest}"), true),
        None => (image, false),
    };
    let header_packages = crate::headers::plan(chain, id)
        .into_iter()
        .find(|s| s.problem.is_none() && !s.packages.is_empty())
        .map(|s| s.packages)
        .unwrap_or_default();
    let mut compilers: Vec<Compiler> = env
        .compilers
        .iter()
        .filter_map(|(major, provider)| {
            let (package, command) = provider.split_once(' ')?;
            Some(Compiler {
                major: major.parse().ok()?,
                package: package.to_string(),
                command: command.trim().to_string(),
            })
        })
        .collect();
    compilers.sort_by_key(|c| c.major);
    // The flavour's own entry (`6.8-azure`) wins over the series'.
    let flavoured = format!("{}-{}", parts.series, parts.flavour);
    let (kernels, expected_gcc) = match env.kernel_compilers.get(&flavoured) {
        Some(m) if !parts.flavour.is_empty() => (
            format!("{} {}", parts.series, parts.flavour),
            m.parse().ok(),
        ),
        _ => (
            parts.series.clone(),
            env.kernel_compilers
                .get(&parts.series)
                .and_then(|m| m.parse().ok()),
        ),
    };
    let mut notes: Vec<String> = env.note.iter().cloned().collect();
    if !pinned {
        notes.push("the image is a tag, not pinned: `kfleet images pin` writes its digest".into());
    }
    if let Some(major) = expected_gcc {
        if compilers.iter().any(|c| c.major == major) {
            notes.push(format!(
                "{family} {} builds {kernels} kernels with gcc {major}",
                id.distro_version
            ));
        } else {
            notes.push(format!(
                "{kernels} kernels are built with gcc {major}, which {family} {} does not ship: the build uses the default gcc",
                id.distro_version
            ));
        }
    }
    if header_packages.is_empty() {
        notes.push("the header chain has no source that names this kernel's packages".into());
    }
    Planned::Plan(BuildPlan {
        identity: id.key(),
        image,
        pinned,
        setup: env.setup.iter().map(|s| parts.expand(s)).collect(),
        install_toolchain: env.install_toolchain.clone(),
        install_headers: env.install_headers.clone(),
        fix_headers: env.fix_headers.clone(),
        header_packages,
        compilers,
        expected_gcc,
        notes,
    })
}

impl BuildPlan {
    /// The plan as `KEY=VALUE` lines (one line each) that `build-module.sh --plan FILE` reads.
    pub fn to_env(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        let mut lines = vec![
            format!("KFLEET_IDENTITY={}", self.identity),
            format!("KFLEET_IMAGE={}", self.image),
            format!("KFLEET_SETUP={}", one_line(&self.setup.join(" && "))),
            format!(
                "KFLEET_INSTALL_TOOLCHAIN={}",
                one_line(&self.install_toolchain)
            ),
            format!("KFLEET_INSTALL_HEADERS={}", one_line(&self.install_headers)),
            format!(
                "KFLEET_FIX_HEADERS={}",
                one_line(self.fix_headers.as_deref().unwrap_or(""))
            ),
            format!(
                "KFLEET_COMPILERS={}",
                self.compilers
                    .iter()
                    .map(|c| format!("{}={}:{}", c.major, c.package, c.command))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ];
        lines.push(format!(
            "KFLEET_EXPECTED_GCC={}",
            self.expected_gcc.map(|m| m.to_string()).unwrap_or_default()
        ));
        lines.join("\n") + "\n"
    }

    /// The commands the build runs, in order, as a reader would type them.
    pub fn commands(&self) -> Vec<String> {
        let mut commands = self.setup.clone();
        commands.push(self.install_toolchain.clone());
        commands.push(format!("{} HEADERS/*", self.install_headers));
        if let Some(fix) = &self.fix_headers {
            commands.push(format!("(if that fails) {fix}"));
        }
        commands.push(
            "CC=<the gcc of the kernel's CONFIG_CC_VERSION_TEXT, where shipped> make -C KERNEL_TREE M=MODULE modules"
                .into(),
        );
        commands.push("tar -cJf ASSET MANIFEST *.ko; sha256sum ASSET > ASSET.sha256".into());
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> KernelIdentity {
        KernelIdentity::from_key(key).unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    fn planned(key: &str) -> BuildPlan {
        match plan(&id(key), &Chain::builtin(), &Digests::default()) {
            Planned::Plan(p) => p,
            Planned::Unsupported { reason, .. } => panic!("{key}: {reason}"),
        }
    }

    #[test]
    fn the_embedded_file_parses() {
        let envs = parse(include_str!("../../assets/build-environments.toml")).unwrap();
        assert!(envs.len() > 20);
    }

    #[test]
    fn bad_entries_are_refused_with_where() {
        let missing = "[[environment]]\nfamily = \"debian\"\nimage = \"x\"\n";
        assert!(
            parse(missing)
                .unwrap_err()
                .contains("environment 1 (debian)")
        );
        let compiler = "[[environment]]\nfamily = \"debian\"\nimage = \"x\"\ninstall_toolchain = \"a\"\ninstall_headers = \"b\"\ncompilers = { \"12\" = \"gcc-12\" }\n";
        assert!(parse(compiler).unwrap_err().contains("PACKAGE COMMAND"));
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_key("8.10") > version_key("8.9"));
        assert!(version_key("8.10") <= version_key("8.99"));
        assert!(version_key("9") > version_key("8.99"));
    }

    #[test]
    fn archived_releases_reach_their_archives() {
        let buster = planned("debian/10/x86_64/4.19.0-27-amd64");
        assert!(
            buster
                .setup
                .iter()
                .any(|s| s.contains("archive.debian.org/debian buster main"))
        );
        assert!(buster.setup.iter().any(|s| s.contains("Check-Valid-Until")));
        let jessie = planned("debian/8/x86_64/3.16.0-11-amd64");
        assert_eq!(jessie.install_headers, "dpkg -i");
        assert!(
            jessie
                .fix_headers
                .as_deref()
                .unwrap()
                .contains("apt-get -f install")
        );
        let mantic = planned("ubuntu/23.10/x86_64/6.5.0-44-generic");
        assert!(mantic.setup[0].contains("old-releases.ubuntu.com"));
        let c7 = planned("centos/7/x86_64/3.10.0-1160.119.1.el7.x86_64");
        assert!(
            c7.setup[0].contains("https://vault.centos.org/7.9.2009"),
            "{:?}",
            c7.setup
        );
        let c8 = planned("centos/8/x86_64/4.18.0-348.7.1.el8_5.x86_64");
        assert!(
            c8.setup[0].contains("https://vault.centos.org/8.5.2111"),
            "{:?}",
            c8.setup
        );
        let bookworm = planned("debian/12/x86_64/6.1.0-18-amd64");
        assert!(bookworm.setup.is_empty());
        assert_eq!(bookworm.image, "docker.io/library/debian:12");
        // A backports kernel of 12 and 13's own: headers whose image package the container's
        // sources lack are unpacked anyway; pahole comes with the toolchain.
        for key in [
            "debian/12/x86_64/6.12.95+deb12-amd64",
            "debian/13/x86_64/7.3.4+deb13-amd64",
            "debian/13/x86_64/6.12.115+deb13.1-amd64",
        ] {
            let plan = planned(key);
            assert_eq!(plan.install_headers, "dpkg -i --force-depends", "{key}");
            assert!(plan.install_toolchain.contains(" dwarves"), "{key}");
        }
    }

    #[test]
    fn compilers_follow_the_kernel_not_the_release_default() {
        let al2 = planned("amazonlinux/2/x86_64/5.10.215-203.850.amzn2.x86_64");
        assert_eq!(al2.expected_gcc, Some(10));
        assert!(
            al2.compilers
                .iter()
                .any(|c| c.major == 10 && c.package == "gcc10" && c.command == "gcc10-gcc")
        );
        assert!(
            al2.to_env()
                .contains("KFLEET_COMPILERS=7=gcc:gcc 10=gcc10:gcc10-gcc\n")
        );
        let al2_414 = planned("amazonlinux/2/x86_64/4.14.343-261.564.amzn2.x86_64");
        assert_eq!(al2_414.expected_gcc, None);
        let hwe = planned("ubuntu/22.04/x86_64/6.8.0-40-generic");
        assert_eq!(hwe.expected_gcc, Some(12));
        assert!(
            hwe.notes
                .iter()
                .any(|n| n.contains("builds 6.8 kernels with gcc 12"))
        );
        let ga = planned("ubuntu/22.04/x86_64/5.15.0-91-generic");
        assert_eq!(ga.expected_gcc, None);
        // The flavour decides where 22.04's kernels of one series differ.
        for (key, gcc) in [
            ("ubuntu/22.04/x86_64/6.8.0-1017-azure", 11),
            ("ubuntu/22.04/x86_64/6.8.0-1015-aws", 12),
            ("ubuntu/22.04/x86_64/6.5.0-1024-aws", 11),
            ("ubuntu/22.04/x86_64/6.2.0-39-generic", 11),
        ] {
            assert_eq!(planned(key).expected_gcc, Some(gcc), "{key}");
        }
        assert!(
            planned("ubuntu/22.04/x86_64/6.8.0-1017-azure")
                .notes
                .iter()
                .any(|n| n.contains("builds 6.8 azure kernels with gcc 11"))
        );
    }

    #[test]
    fn no_matching_environment_or_an_unsupported_one_says_why() {
        let id = id("debian/12/x86_64/6.1.0-18-amd64");
        let envs = parse("[[environment]]\nfamily = \"debian\"\nversions = [\"11\"]\nimage = \"x\"\ninstall_toolchain = \"a\"\ninstall_headers = \"b\"\n\n[[environment]]\nfamily = \"debian\"\nfrom = \"12\"\nunsupported = \"not yet\"\n").unwrap();
        assert_eq!(
            plan_in(&envs[..1], &id, &Chain::builtin(), &Digests::default()),
            Planned::Unsupported {
                identity: id.key(),
                reason: format!("no build environment for debian 12: add one to {DATA_FILE}")
            }
        );
        assert!(matches!(
            plan_in(&envs, &id, &Chain::builtin(), &Digests::default()),
            Planned::Unsupported { reason, .. } if reason == "not yet"
        ));
    }
}
