//! `kfleet kabi`: what a built module imports, and whether it loads into another kernel release.

use crate::cli::KabiCommand;
use crate::cli::runtime;
use crate::config::Config;
use crate::kabi::{KernelAbi, ModuleAbi, Symvers, Verdict, check};
use anyhow::Context;
use anyhow::Result;
use anyhow::bail;
use std::process::ExitCode;

/// The most a module or a symbol table (decompressed) may hold.
const MAX_BYTES: u64 = 256 << 20;

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    crate::bounded::read_file(path, MAX_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The modules of a file: one module (`.ko`, or compressed `.ko.xz`/`.ko.gz`), or every module
/// of a driver package (then `true`), with the names the kernel knows them by.
fn read_modules(path: &std::path::Path) -> Result<(bool, Vec<(String, ModuleAbi)>)> {
    // Read decompressed (a module may be a .ko.xz); a tar inside is a driver package, which is
    // read again as the .tar.xz it is.
    let bytes = read(path)?;
    if bytes.get(257..262) != Some(b"ustar".as_slice()) {
        let abi = ModuleAbi::read(&bytes).with_context(|| format!("{}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.split(".ko").next().unwrap_or_default();
        return Ok((
            false,
            vec![(crate::node::install::kernel_module_name(stem), abi)],
        ));
    }
    let size = std::fs::metadata(path)?.len();
    if size > MAX_BYTES {
        bail!("{}: larger than {MAX_BYTES} bytes", path.display());
    }
    let compressed =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let modules = crate::node::install::read_package_bytes(path, &compressed)?;
    let record = package_record(path, &modules)?;
    Ok((
        true,
        record
            .modules
            .into_iter()
            .map(|m| (m.module, m.abi))
            .collect(),
    ))
}

/// The kABI record of the modules of the driver package at `path`: each one's vermagic and
/// imports with CRCs.
pub(crate) fn package_record(
    path: &std::path::Path,
    modules: &[crate::node::install::Module],
) -> Result<crate::kabi::PackageAbi> {
    Ok(crate::kabi::PackageAbi {
        modules: modules
            .iter()
            .map(|m| {
                let abi = ModuleAbi::read(&m.bytes)
                    .with_context(|| format!("{}: {}.ko", path.display(), m.file))?;
                Ok(crate::kabi::NamedModuleAbi {
                    module: m.name.clone(),
                    abi,
                })
            })
            .collect::<Result<_>>()?,
    })
}

pub(crate) fn kabi_cmd(cmd: KabiCommand, config: &Config) -> Result<ExitCode> {
    match cmd {
        KabiCommand::Imports { module } => {
            let (package, modules) = read_modules(&module)?;
            if super::json_wanted() {
                if package {
                    let record = crate::kabi::PackageAbi {
                        modules: modules
                            .into_iter()
                            .map(|(module, abi)| crate::kabi::NamedModuleAbi { module, abi })
                            .collect(),
                    };
                    super::print_json(&serde_json::to_value(&record)?)?;
                } else {
                    super::print_json(&serde_json::to_value(&modules[0].1)?)?;
                }
            } else {
                for (name, abi) in &modules {
                    if package {
                        outln!("{name}: vermagic {}", abi.vermagic);
                    } else {
                        outln!("vermagic: {}", abi.vermagic);
                    }
                    for import in &abi.imports {
                        outln!("{}\t{}", import.crc, import.symbol);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KabiCommand::Check {
            module,
            kernel,
            kernel_tree,
            symvers,
            vermagic,
            chain,
        } => {
            let (_, modules) = read_modules(&module)?;
            let kernel = match (kernel, kernel_tree, symvers, vermagic) {
                (Some(key), _, _, _) => {
                    let id = crate::identity::KernelIdentity::from_key(&key).map_err(|e| {
                        anyhow::anyhow!("--kernel {}: {e}", crate::text::clean(&key))
                    })?;
                    let cache = chain.state_root(config).join("kabi").join("kernels");
                    runtime()?.block_on(chain.resolver(config)?.kernel_abi(&id, &cache))?
                }
                (None, Some(dir), _, _) => KernelAbi::from_tree(&dir)?,
                (None, None, Some(file), Some(vermagic)) => KernelAbi {
                    vermagic,
                    symvers: Symvers::read(&file)?,
                },
                _ => bail!(
                    "say which kernel: --kernel KEY, --kernel-tree DIR, or --symvers FILE with --vermagic"
                ),
            };
            let verdicts: Vec<(String, Verdict)> = modules
                .iter()
                .map(|(name, abi)| (name.clone(), check(abi, &kernel.vermagic, &kernel.symvers)))
                .collect();
            let loads = verdicts.iter().all(|(_, v)| v.loads());
            if super::json_wanted() {
                let mut value = if verdicts.len() == 1 {
                    let mut v = serde_json::to_value(&verdicts[0].1)?;
                    v["module_vermagic"] = modules[0].1.vermagic.clone().into();
                    v
                } else {
                    serde_json::json!({
                        "loads": loads,
                        "modules": verdicts
                            .iter()
                            .map(|(name, v)| {
                                let mut v = serde_json::to_value(v).unwrap_or_default();
                                v["module"] = name.clone().into();
                                v
                            })
                            .collect::<Vec<_>>(),
                    })
                };
                value["kernel_vermagic"] = kernel.vermagic.clone().into();
                super::print_json(&value)?;
            } else {
                for (name, verdict) in &verdicts {
                    let who = if verdicts.len() > 1 {
                        format!("{name}: ")
                    } else {
                        String::new()
                    };
                    match verdict {
                        Verdict::Exact => {
                            outln!("{who}exact: built for this kernel ({})", kernel.vermagic)
                        }
                        Verdict::Compatible { imports } => outln!(
                            "{who}compatible: all {imports} imported symbols have the same CRC in {}",
                            kernel.vermagic
                        ),
                        Verdict::Incompatible { reason } => outln!("{who}not compatible: {reason}"),
                    }
                }
            }
            Ok(if loads {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}
