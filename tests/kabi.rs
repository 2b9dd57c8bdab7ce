#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Symbol-version compatibility never says yes wrongly: any difference a kernel's loader would
//! refuse (an imported symbol's CRC, a symbol the kernel does not export, a vermagic flag, the
//! architecture, modversions off on either side) makes a pair incompatible, and nothing else
//! does. Real modules and real Debian kernels are checked in `tests/build_module.rs`.

use kfleet::kabi::{Import, ModuleAbi, Symvers, Verdict, Vermagic, check, vermagic_from_config};
use proptest::prelude::*;

const REST: &str = "SMP preempt mod_unload modversions ";

fn module(release: &str, imports: &[(String, u32)]) -> ModuleAbi {
    ModuleAbi {
        vermagic: format!("{release} {REST}"),
        imports: imports
            .iter()
            .map(|(s, c)| Import {
                symbol: s.clone(),
                crc: format!("0x{c:08x}"),
            })
            .collect(),
    }
}

fn symbols() -> impl Strategy<Value = Vec<(String, u32)>> {
    proptest::collection::btree_map("[a-z_][a-z0-9_]{0,20}", any::<u32>(), 1..40)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A kernel that exports every import with the same CRC (and more symbols besides, with any
    /// CRCs) loads the module; any one change to an imported symbol's CRC, or its absence,
    /// makes it refuse.
    #[test]
    fn one_changed_or_missing_import_makes_a_pair_incompatible(
        imports in symbols(),
        extra in symbols(),
        pick in any::<proptest::sample::Index>(),
        flip in 1u32..,
        drop in any::<bool>(),
    ) {
        let m = module("6.1.0-42-amd64", &imports);
        let mut exported: Vec<(String, u32)> = extra
            .into_iter()
            .filter(|(s, _)| !imports.iter().any(|(i, _)| i == s))
            .collect();
        exported.extend(imports.iter().cloned());
        let kernel = format!("6.1.0-47-amd64 {REST}");
        let table = Symvers::from_pairs(exported.clone());
        prop_assert_eq!(check(&m, &kernel, &table), Verdict::Compatible { imports: imports.len() });

        let (symbol, crc) = &imports[pick.index(imports.len())];
        let changed: Vec<(String, u32)> = exported
            .iter()
            .filter(|(s, _)| !(drop && s == symbol))
            .map(|(s, c)| if s == symbol { (s.clone(), crc ^ flip) } else { (s.clone(), *c) })
            .collect();
        let verdict = check(&m, &kernel, &Symvers::from_pairs(changed));
        prop_assert!(!verdict.loads(), "{:?}", verdict);
        let Verdict::Incompatible { reason } = verdict else { unreachable!() };
        prop_assert!(reason.contains(symbol.as_str()), "{}", reason);
    }

    /// A different flag or architecture part of the vermagic, or modversions off on either side,
    /// is never compatible, whatever the symbols say.
    #[test]
    fn a_different_vermagic_or_no_modversions_is_never_compatible(
        imports in symbols(),
        which in 0usize..6,
    ) {
        let table = Symvers::from_pairs(imports.clone());
        let (m, kernel) = match which {
            0 => (module("6.1.0-42-amd64", &imports), "6.1.0-47-amd64 SMP mod_unload modversions ".to_string()),
            1 => (module("6.1.0-42-amd64", &imports), "6.1.0-47-amd64 SMP preempt_rt mod_unload modversions ".to_string()),
            2 => (module("6.1.0-42-arm64", &imports), "6.1.0-47-arm64 SMP preempt mod_unload modversions aarch64".to_string()),
            3 => (module("6.1.0-42-amd64", &imports), "6.1.0-47-amd64 SMP preempt mod_unload ".to_string()),
            4 => (module("6.1.0-42-amd64", &[]), format!("6.1.0-47-amd64 {REST}")),
            _ => (module("6.1.0-42-amd64", &imports), format!("6.1.0-47-amd64 {REST}RANDSTRUCT_abc")),
        };
        let verdict = check(&m, &kernel, &table);
        prop_assert!(!verdict.loads(), "case {}: {:?}", which, verdict);
    }
}

/// The same release and vermagic is the module's own kernel: exact, without a symbol table.
#[test]
fn the_module_s_own_kernel_is_exact() {
    let m = module("6.1.0-42-amd64", &[("printk".into(), 1)]);
    assert_eq!(
        check(&m, &format!("6.1.0-42-amd64 {REST}"), &Symvers::default()),
        Verdict::Exact
    );
    assert!(Vermagic::parse(&m.vermagic).modversions());
}

#[test]
fn module_symvers_lines_are_read_and_bad_ones_named() {
    let text = "0x9060323f\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n0x92997ed8\t_printk\tvmlinux\tEXPORT_SYMBOL\n\n0x00000001\tns_sym\tdrivers/x\tEXPORT_SYMBOL_GPL\tSOME_NS\n";
    let table = Symvers::parse("Module.symvers", text).unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(table.get("module_layout"), Some(0x9060323f));
    assert_eq!(table.get("ns_sym"), Some(1));
    let err = Symvers::parse(
        "Module.symvers",
        "0x1\tok\tvmlinux\tEXPORT_SYMBOL\nzz\tbad\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("Module.symvers:2: `zz` is not a CRC"),
        "{err}"
    );
}

#[test]
fn vermagic_follows_the_kernel_config() {
    let config =
        "CONFIG_SMP=y\nCONFIG_PREEMPT_BUILD=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_MODVERSIONS=y\n";
    assert_eq!(
        vermagic_from_config("6.1.0-48-amd64", config, "x86_64", None),
        "6.1.0-48-amd64 SMP preempt mod_unload modversions "
    );
    let rt = "CONFIG_SMP=y\nCONFIG_PREEMPT_RT=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_MODVERSIONS=y\n";
    assert_eq!(
        vermagic_from_config("6.1.0-48-rt-arm64", rt, "aarch64", None),
        "6.1.0-48-rt-arm64 SMP preempt_rt mod_unload modversions aarch64"
    );
}

fn kfleet(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kfleet"))
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .args(args)
        .output()
        .unwrap()
}

/// A file that is not a module, a missing tree and a damaged symbol table are errors that say
/// what is wrong and where, with exit 1 (not the verdict's 2).
#[test]
fn bad_inputs_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("kdriver.ko");
    std::fs::write(&not_elf, b"#!/bin/sh\necho not a module\n").unwrap();
    let out = kfleet(&["kabi", "imports", not_elf.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kdriver.ko") && stderr.contains("not an ELF object"),
        "{stderr}"
    );

    let missing = dir.path().join("no-tree");
    let out = kfleet(&[
        "kabi",
        "check",
        not_elf.to_str().unwrap(),
        "--kernel-tree",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));

    let symvers = dir.path().join("Module.symvers");
    std::fs::write(
        &symvers,
        "0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\nnot a line\n",
    )
    .unwrap();
    let table = Symvers::parse(
        "Module.symvers",
        &std::fs::read_to_string(&symvers).unwrap(),
    );
    assert!(table.unwrap_err().to_string().contains("Module.symvers:2:"));
}
