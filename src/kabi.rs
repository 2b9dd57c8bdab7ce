//! Symbol-version (kABI) compatibility: may a module built for one kernel release load into
//! another?
//!
//! A kernel built with `CONFIG_MODVERSIONS` loads a module whose vermagic differs from its own
//! only in the release (the kernel's `same_magic` skips the release when the module carries
//! CRCs) if every symbol the module imports is exported with the same CRC (`check_version`);
//! a symbol it does not export at all fails the load. [`check`] answers the same question from
//! what a module records ([`ModuleAbi`], its vermagic and `__versions`) and what a kernel offers
//! (its vermagic and its `Module.symvers`, [`Symvers`]), and names the first reason it is not.
//! A false "compatible" would load code that oopses a node, so every doubt is "no": a module or
//! a kernel without modversions is never compatible with another release.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum KabiError {
    #[error("{file}:{line}: {reason}")]
    Symvers {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Module(#[from] crate::kmod::ModInfoError),
    #[error("the module has no vermagic in its .modinfo; not a kernel module built by kbuild")]
    NoVermagic,
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {reason}")]
    Kallsyms { file: String, reason: String },
}

/// The exported symbols of one kernel and their CRCs, as its `Module.symvers` lists them
/// (`0xCRC<TAB>symbol<TAB>module<TAB>export type[<TAB>namespace]`; kernels before 5.4 have no
/// namespace column).
#[derive(Debug, Default, Clone)]
pub struct Symvers {
    crcs: HashMap<String, u32>,
}

/// The most lines a `Module.symvers` is believed to hold (a distribution kernel exports about
/// 30,000 symbols).
const MAX_SYMVERS_LINES: usize = 1_000_000;

impl Symvers {
    /// A table of these CRCs by symbol.
    pub fn from_crcs(crcs: HashMap<String, u32>) -> Self {
        Self { crcs }
    }

    /// The CRCs by symbol.
    pub fn crcs(&self) -> &HashMap<String, u32> {
        &self.crcs
    }

    /// Reads a `Module.symvers`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, KabiError> {
        let mut crcs = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| KabiError::Symvers {
                file: file.to_string(),
                line: i + 1,
                reason,
            };
            if i >= MAX_SYMVERS_LINES {
                return Err(bad(format!(
                    "more than {MAX_SYMVERS_LINES} lines; not a Module.symvers"
                )));
            }
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split('\t');
            let (Some(crc), Some(symbol)) = (fields.next(), fields.next()) else {
                return Err(bad("expected `0xCRC<TAB>symbol<TAB>...`".into()));
            };
            let crc = crc
                .strip_prefix("0x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .ok_or_else(|| bad(format!("`{crc}` is not a CRC (0x followed by hex digits)")))?;
            if symbol.is_empty() || symbol.contains(char::is_whitespace) {
                return Err(bad(format!("`{symbol}` is not a symbol name")));
            }
            crcs.insert(symbol.to_string(), crc);
        }
        Ok(Symvers { crcs })
    }

    /// Reads a `Module.symvers` file (EL's `/boot/symvers-RELEASE.xz` and `.gz` decompressed),
    /// within 256 MiB.
    pub fn read(path: &std::path::Path) -> Result<Self, KabiError> {
        let io = |source: std::io::Error| KabiError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = crate::bounded::read_file(path, 256 << 20).map_err(|e| match e {
            crate::bounded::BoundedError::Io(source) => io(source),
            other => io(std::io::Error::other(other.to_string())),
        })?;
        Self::parse(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        )
    }

    pub fn get(&self, symbol: &str) -> Option<u32> {
        self.crcs.get(symbol).copied()
    }

    pub fn len(&self) -> usize {
        self.crcs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crcs.is_empty()
    }

    /// The CRCs a running kernel lists in `/proc/kallsyms` (`file` names it in errors): each
    /// exported symbol's CRC is the value of the absolute symbol `__crc_SYMBOL` (type `A`), in
    /// kernels that still emit them so (EL 8's 4.18 and EL 9's 5.14 among them). Refused where the
    /// table cannot be trusted: no `__crc_` symbols (no modversions, or the file is not kallsyms),
    /// CRCs kept in `__kcrctab` data (not absolute: the listed value is an address), or values
    /// hidden by `kptr_restrict` (all zero: read as root).
    pub fn from_kallsyms(file: &str, text: &str) -> Result<Self, KabiError> {
        let bad = |reason: &str| KabiError::Kallsyms {
            file: file.to_string(),
            reason: reason.to_string(),
        };
        let mut crcs = HashMap::new();
        let mut nonzero = false;
        for line in text.lines().take(MAX_SYMVERS_LINES * 20) {
            let mut fields = line.split_whitespace();
            let (Some(value), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(symbol) = name.strip_prefix("__crc_") else {
                continue;
            };
            if !matches!(kind, "A" | "a") {
                return Err(bad(
                    "this kernel keeps its symbol CRCs in __kcrctab data, which kallsyms lists by address, not value; install its headers package (Module.symvers) to check against",
                ));
            }
            let value = u64::from_str_radix(value, 16)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(&format!("__crc_{symbol} has no 32-bit CRC as its value")))?;
            nonzero |= value != 0;
            crcs.insert(symbol.to_string(), value);
        }
        if crcs.is_empty() {
            return Err(bad(
                "lists no __crc_ symbols: the kernel has no modversions, or this is not its kallsyms",
            ));
        }
        if !nonzero {
            return Err(bad(
                "every __crc_ value reads as zero: kptr_restrict hides symbol values from this user; run as root",
            ));
        }
        Ok(Symvers { crcs })
    }

    /// A table from (symbol, CRC) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, u32)>) -> Self {
        Symvers {
            crcs: pairs.into_iter().collect(),
        }
    }
}

/// A vermagic string split at its first space: the kernel release, and the rest (SMP, preempt,
/// mod_unload, modversions, the architecture's part) that must match exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vermagic {
    pub release: String,
    pub rest: String,
}

impl Vermagic {
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let (release, rest) = text.split_once(' ').unwrap_or((text, ""));
        Vermagic {
            release: release.to_string(),
            rest: rest.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// Whether the kernel (or the module's kernel) was built with `CONFIG_MODVERSIONS`.
    pub fn modversions(&self) -> bool {
        self.rest.split(' ').any(|f| f == "modversions")
    }
}

/// The vermagic a module built against a kernel tree gets, from the tree's `.config`, its
/// release and architecture (`include/linux/vermagic.h` of kernels 5.x and 6.x): `UTS_RELEASE`,
/// then `SMP `, `preempt ` (or `preempt_rt `), `mod_unload `, `modversions `, the
/// architecture's part (`aarch64` on arm64, nothing on x86_64) and `RANDSTRUCT_<seed>` where
/// structure layout randomisation is on (`randstruct_seed` from
/// `include/generated/randstruct_hash.h`).
pub fn vermagic_from_config(
    release: &str,
    config: &str,
    architecture: &str,
    randstruct_seed: Option<&str>,
) -> String {
    let on = |option: &str| {
        let line = format!("CONFIG_{option}=y");
        config.lines().any(|l| l.trim() == line)
    };
    let mut out = format!("{release} ");
    if on("SMP") {
        out.push_str("SMP ");
    }
    if on("PREEMPT_BUILD") || (on("PREEMPT") && !on("PREEMPT_RT")) {
        out.push_str("preempt ");
    } else if on("PREEMPT_RT") {
        out.push_str("preempt_rt ");
    }
    if on("MODULE_UNLOAD") {
        out.push_str("mod_unload ");
    }
    if on("MODVERSIONS") {
        out.push_str("modversions ");
    }
    if architecture == "aarch64" {
        out.push_str("aarch64");
    }
    if let Some(seed) = randstruct_seed.filter(|_| on("RANDSTRUCT") || on("GCC_PLUGIN_RANDSTRUCT"))
    {
        out.push_str(&format!("RANDSTRUCT_{seed}"));
    }
    out
}

/// What a built module needs from the kernel that loads it: its vermagic and the symbols it
/// imports with their CRCs. Recorded beside a driver artifact (`kfleet kabi imports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleAbi {
    pub vermagic: String,
    pub imports: Vec<Import>,
}

/// What a driver package's modules need: the record the build job uploads beside the artifact
/// as `NAME.kabi.json` ([`crate::artifacts::KABI_SUFFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageAbi {
    pub modules: Vec<NamedModuleAbi>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedModuleAbi {
    /// The name the kernel knows the module by.
    pub module: String,
    #[serde(flatten)]
    pub abi: ModuleAbi,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    pub symbol: String,
    /// The CRC as `modprobe --dump-modversions` prints it (`0x` and eight hex digits).
    pub crc: String,
}

impl ModuleAbi {
    /// Reads a module file (`.ko`).
    pub fn read(bytes: &[u8]) -> Result<Self, KabiError> {
        let vermagic = crate::kmod::vermagic(bytes)?.ok_or(KabiError::NoVermagic)?;
        let mut seen = std::collections::HashSet::new();
        let imports = crate::kmod::modversions(bytes)?
            .into_iter()
            .filter(|(symbol, _)| seen.insert(symbol.clone()))
            .map(|(symbol, crc)| Import {
                symbol,
                crc: format!("0x{crc:08x}"),
            })
            .collect();
        Ok(ModuleAbi { vermagic, imports })
    }

    fn crcs(&self) -> impl Iterator<Item = (&str, Option<u32>)> {
        self.imports.iter().map(|i| {
            (
                i.symbol.as_str(),
                i.crc
                    .strip_prefix("0x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok()),
            )
        })
    }
}

/// Whether a module may load into a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Built for this very kernel: the vermagic matches whole.
    Exact,
    /// Built for another release whose symbols this kernel exports with the same CRCs.
    Compatible { imports: usize },
    /// It may not load; the first reason found.
    Incompatible { reason: String },
}

impl Verdict {
    pub fn loads(&self) -> bool {
        !matches!(self, Verdict::Incompatible { .. })
    }
}

/// Checks `module` against a kernel whose vermagic is `kernel_vermagic` and which exports
/// `symvers`, as the kernel's module loader would.
pub fn check(module: &ModuleAbi, kernel_vermagic: &str, symvers: &Symvers) -> Verdict {
    let no = |reason: String| Verdict::Incompatible { reason };
    let m = Vermagic::parse(&module.vermagic);
    let k = Vermagic::parse(kernel_vermagic);
    if m == k {
        return Verdict::Exact;
    }
    if m.rest != k.rest {
        return no(format!(
            "vermagic differs beyond the release: the module has `{}`, the kernel `{}`",
            m.rest, k.rest
        ));
    }
    if !k.modversions() {
        return no(format!(
            "the kernel {} is built without modversions: it loads only modules built for itself",
            k.release
        ));
    }
    if module.imports.is_empty() {
        return no(format!(
            "the module records no symbol CRCs (__versions): it loads only into {}",
            m.release
        ));
    }
    if symvers.is_empty() {
        return no(format!("no exported symbols are known for {}", k.release));
    }
    for (symbol, crc) in module.crcs() {
        let Some(crc) = crc else {
            return no(format!("the module's CRC of {symbol} is unreadable"));
        };
        match symvers.get(symbol) {
            None => {
                return no(format!("{} does not export {symbol}", k.release));
            }
            Some(theirs) if theirs != crc => {
                return no(format!(
                    "{symbol}: the module was built against CRC 0x{crc:08x}, {} exports 0x{theirs:08x}",
                    k.release
                ));
            }
            Some(_) => {}
        }
    }
    Verdict::Compatible {
        imports: module.imports.len(),
    }
}

/// A kernel as a built tree (a headers package's `/usr/src/linux-headers-RELEASE`, or
/// `/lib/modules/RELEASE/build`) describes it: the vermagic modules built against it get, and
/// the symbols it exports.
pub struct KernelAbi {
    pub vermagic: String,
    pub symvers: Symvers,
}

impl KernelAbi {
    /// Reads `DIR/Module.symvers`, `DIR/.config`, the release from
    /// `DIR/include/generated/utsrelease.h` (or `include/config/kernel.release`) and, where
    /// structure randomisation is on, `DIR/include/generated/randstruct_hash.h`.
    pub fn from_tree(dir: &std::path::Path) -> Result<Self, KabiError> {
        let read = |rel: &str| {
            let path = dir.join(rel);
            std::fs::read_to_string(&path).map_err(|source| KabiError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let symvers = Symvers::read(&dir.join("Module.symvers"))?;
        // UTS_RELEASE is what `uname -r` says; Debian's kernel.release holds the upstream version.
        let release = match read("include/generated/utsrelease.h")
            .ok()
            .and_then(|h| define(&h, "UTS_RELEASE"))
        {
            Some(release) => release,
            None => read("include/config/kernel.release")?.trim().to_string(),
        };
        let seed = read("include/generated/randstruct_hash.h")
            .ok()
            .and_then(|h| define(&h, "RANDSTRUCT_HASHED_SEED"));
        Ok(KernelAbi::new(
            &release,
            &read(".config")?,
            seed.as_deref(),
            symvers,
        ))
    }

    /// A kernel from its release, its `.config` (`/boot/config-RELEASE`), the randstruct seed
    /// where it has one, and its symbol table.
    pub fn new(
        release: &str,
        config: &str,
        randstruct_seed: Option<&str>,
        symvers: Symvers,
    ) -> Self {
        let architecture = if config.lines().any(|l| l.trim() == "CONFIG_ARM64=y") {
            "aarch64"
        } else {
            "x86_64"
        };
        KernelAbi {
            vermagic: vermagic_from_config(release, config, architecture, randstruct_seed),
            symvers,
        }
    }
}

/// The string a generated header `#define`s `name` to.
pub fn define(header: &str, name: &str) -> Option<String> {
    header.lines().find_map(|l| {
        let rest = l
            .strip_prefix("#define ")?
            .trim_start()
            .strip_prefix(name)?;
        rest.starts_with(char::is_whitespace)
            .then(|| rest.trim().trim_matches('"').to_string())
    })
}
