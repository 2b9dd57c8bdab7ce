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

pub(crate) fn kabi_cmd(cmd: KabiCommand) -> Result<ExitCode> {
    match cmd {
        KabiCommand::Imports { module } => {
            let abi = read_module(&module)?;
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
