//! `kfleet kabi`: what a built module imports, and whether it loads into another kernel release.

use super::prelude::*;
use crate::kabi::{KernelAbi, ModuleAbi, Symvers, Verdict, check};

/// The most a module or a symbol table (decompressed) may hold.
const MAX_BYTES: u64 = 256 << 20;

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    crate::bounded::read_file(path, MAX_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn read_module(path: &std::path::Path) -> Result<ModuleAbi> {
    ModuleAbi::read(&read(path)?).with_context(|| format!("{}", path.display()))
}

/// `kabi imports PACKAGE.tar.xz`: each module's vermagic and imports, as one record.
fn package_imports(path: &std::path::Path, compressed: &[u8]) -> Result<ExitCode> {
    let modules = crate::install::read_package_bytes(path, compressed)?;
    let mut record = crate::kabi::PackageAbi {
        modules: Vec::with_capacity(modules.len()),
    };
    for m in &modules {
        record.modules.push(crate::kabi::NamedModuleAbi {
            module: m.name.clone(),
            abi: ModuleAbi::read(&m.bytes)
                .with_context(|| format!("{}: {}.ko", path.display(), m.file))?,
        });
    }
    if super::json_wanted() {
        super::print_json(&serde_json::to_value(&record)?)?;
    } else {
        for m in &record.modules {
            outln!("{}: vermagic {}", m.module, m.abi.vermagic);
            for import in &m.abi.imports {
                outln!("{}\t{}", import.crc, import.symbol);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn kabi_cmd(cmd: KabiCommand) -> Result<ExitCode> {
    match cmd {
        KabiCommand::Imports { module } => {
            // Read decompressed (a module may be a .ko.xz); a tar inside is a driver package,
            // which is read again as the .tar.xz it is.
            let bytes = read(&module)?;
            if bytes.get(257..262) == Some(b"ustar".as_slice()) {
                let size = std::fs::metadata(&module)?.len();
                if size > MAX_BYTES {
                    bail!("{}: larger than {MAX_BYTES} bytes", module.display());
                }
                let compressed = std::fs::read(&module)
                    .with_context(|| format!("cannot read {}", module.display()))?;
                return package_imports(&module, &compressed);
            }
            let abi = ModuleAbi::read(&bytes).with_context(|| format!("{}", module.display()))?;
            if super::json_wanted() {
                super::print_json(&serde_json::to_value(&abi)?)?;
            } else {
                outln!("vermagic: {}", abi.vermagic);
                for import in &abi.imports {
                    outln!("{}\t{}", import.crc, import.symbol);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KabiCommand::Check {
            module,
            kernel_tree,
            symvers,
            vermagic,
        } => {
            let abi = read_module(&module)?;
            let kernel = match (kernel_tree, symvers, vermagic) {
                (Some(dir), _, _) => KernelAbi::from_tree(&dir)?,
                (None, Some(file), Some(vermagic)) => KernelAbi {
                    vermagic,
                    symvers: Symvers::read(&file)?,
                },
                _ => {
                    bail!("say which kernel: --kernel-tree DIR, or --symvers FILE with --vermagic")
                }
            };
            let verdict = check(&abi, &kernel.vermagic, &kernel.symvers);
            if super::json_wanted() {
                let mut value = serde_json::to_value(&verdict)?;
                value["module_vermagic"] = abi.vermagic.clone().into();
                value["kernel_vermagic"] = kernel.vermagic.clone().into();
                super::print_json(&value)?;
            } else {
                match &verdict {
                    Verdict::Exact => outln!("exact: built for this kernel ({})", kernel.vermagic),
                    Verdict::Compatible { imports } => outln!(
                        "compatible: all {imports} imported symbols have the same CRC in {}",
                        kernel.vermagic
                    ),
                    Verdict::Incompatible { reason } => outln!("not compatible: {reason}"),
                }
            }
            Ok(if verdict.loads() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}
