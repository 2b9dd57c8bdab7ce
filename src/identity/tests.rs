use super::*;
use proptest::prelude::*;

fn verdict(d: &str, v: &str, a: &str, k: &str) -> Checked {
    check(&RawIdentity {
        distribution: d,
        distro_version: v,
        architecture: a,
        kernel_version: k,
    })
}

fn key(d: &str, v: &str, a: &str, k: &str) -> String {
    let c = verdict(d, v, a, k);
    assert!(
        matches!(c.verdict, Verdict::Valid(_)),
        "{d}/{v}/{a}/{k}: {:?}",
        c.verdict
    );
    c.key()
}

fn invalid_reason(d: &str, v: &str, a: &str, k: &str) -> String {
    match verdict(d, v, a, k).verdict {
        Verdict::Invalid(r) => r,
        other => panic!("{d}/{v}/{a}/{k} should be invalid, got {other:?}"),
    }
}

/// Every real kernel is valid, except Amazon Linux 2022 (a preview no one builds any more),
/// which is unsupported with the reason.
#[test]
fn every_real_kernel_in_the_shared_data_is_valid() {
    let text = include_str!("../../tests/fixtures/real-kernels.csv");
    let mut n = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let c = verdict(f[0], f[1], f[2], f[3]);
        n += 1;
        if f[0] == "amazonlinux" && f[1] == "2022" {
            assert!(
                matches!(&c.verdict, Verdict::Unsupported(r) if r.contains("Amazon Linux 2022 was a preview")),
                "{line}: {:?}",
                c.verdict
            );
            continue;
        }
        assert!(
            matches!(c.verdict, Verdict::Valid(_)),
            "{line}: {:?}",
            c.verdict
        );
        assert_eq!(c.key(), format!("{}/{}/{}/{}", f[0], f[1], f[2], f[3]));
    }
    assert_eq!(n, 647);
}

#[test]
fn ubuntu_flavours_old_and_new() {
    for (v, a, k) in [
        ("14.04", "x86_64", "3.19.0-22-generic"),
        ("16.04", "x86_64", "4.4.0-1128-aws"),
        ("18.04", "x86_64", "5.4.0-1031-gkeop"),
        ("20.04", "x86_64", "5.4.0-104-lowlatency"),
        ("22.04", "aarch64", "5.15.0-1034-raspi"),
        ("22.04", "x86_64", "5.19.0-1025-aws"),
        ("24.04", "aarch64", "6.8.0-1012-aws"),
        ("24.04", "x86_64", "6.8.0-1008-nvidia"),
    ] {
        key("ubuntu", v, a, k);
    }
    // Any flavour of the right shape: Ubuntu adds flavours with its kernel lines.
    key("ubuntu", "22.04", "x86_64", "5.15.0-91-banana");
    assert!(
        invalid_reason("ubuntu", "22.04", "x86_64", "5.15.0-91-Generic")
            .contains("is not an Ubuntu kernel")
    );
    assert!(
        invalid_reason("ubuntu", "22.04", "x86_64", "5.15.0-1034-raspi").contains("arm64 only")
    );
    assert!(invalid_reason("ubuntu", "22.05", "x86_64", "5.15.0-91-generic").contains("22.05"));
}

#[test]
fn same_uname_in_two_ubuntu_releases_is_two_identities() {
    assert_ne!(
        key("ubuntu", "18.04", "x86_64", "5.4.0-1045-aws"),
        key("ubuntu", "20.04", "x86_64", "5.4.0-1045-aws")
    );
}

#[test]
fn debian_forms_and_cross_checks() {
    for (v, a, k) in [
        ("12", "x86_64", "6.1.0-18-amd64"),
        ("12", "aarch64", "6.1.0-26-cloud-arm64"),
        ("10", "x86_64", "5.10.0-0.deb10.30-amd64"),
        ("10", "aarch64", "4.19.0-17-rt-arm64"),
        ("13", "aarch64", "6.12.57+deb13-cloud-arm64"),
        ("13", "x86_64", "6.12.74+deb13+1-amd64"),
        // A security update of the same upstream release (trixie-security 6.12.115-2).
        ("13", "x86_64", "6.12.115+deb13.1-amd64"),
        ("9", "x86_64", "4.19.0-0.bpo.6-amd64"),
        ("12", "x86_64", "6.12.12+bpo-amd64"),
    ] {
        key("debian", v, a, k);
    }
    assert_eq!(
        invalid_reason("debian", "12", "aarch64", "6.1.0-18-amd64"),
        "6.1.0-18-amd64 is a Debian amd64 kernel but architecture is aarch64"
    );
    assert_eq!(
        invalid_reason("debian", "12", "x86_64", "6.12.57+deb13-amd64"),
        "deb13 in kernel_version but distro_version is 12"
    );
    assert!(
        invalid_reason("debian", "11", "x86_64", "6.1.0-18-amd64").contains("Debian 12's series")
    );
    assert_eq!(
        key("debian", "bookworm", "amd64", "6.1.0-18-amd64"),
        "debian/12/x86_64/6.1.0-18-amd64"
    );
}

#[test]
fn fedora_cross_checks() {
    key("fedora", "39", "x86_64", "6.5.6-300.fc39.x86_64");
    key("fedora", "40", "arm64", "6.8.9-300.fc40.aarch64");
    assert_eq!(
        invalid_reason("fedora", "39", "x86_64", "6.2.9-300.fc38.x86_64"),
        "fc38 in kernel_version but distro_version is 39"
    );
    assert!(
        invalid_reason("fedora", "40", "x86_64", "6.8.9-300.fc40.aarch64")
            .contains("built for aarch64")
    );
}

#[test]
fn el_families() {
    key("centos", "9", "x86_64", "5.14.0-362.el9.x86_64");
    key("centos", "10", "aarch64", "6.12.0-55.el10.aarch64");
    key("centos", "8", "aarch64", "4.18.0-305.19.1.el8_4.aarch64");
    key("centos-stream", "9", "x86_64", "5.14.0-362.el9.x86_64");
    assert_eq!(
        key("almalinux", "9.4", "x86_64", "5.14.0-427.13.1.el9_4.x86_64"),
        "almalinux/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64"
    );
    assert_eq!(
        key("rocky", "9", "x86_64", "5.14.0-427.13.1.el9_4.x86_64"),
        "rocky/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64",
        "major-only version is refined from the kernel"
    );
    assert_eq!(
        invalid_reason("almalinux", "9.3", "x86_64", "5.14.0-427.13.1.el9_4.x86_64"),
        "el9_4 in kernel_version is newer than distro_version 9.3"
    );
    assert_eq!(
        key("almalinux", "9.5", "x86_64", "5.14.0-427.42.1.el9_4.x86_64"),
        "almalinux/9.5/x86_64/5.14.0-427.42.1.el9_4.x86_64",
        "a pinned older minor keeps the node's version"
    );
    assert_eq!(
        invalid_reason("centos", "8", "x86_64", "5.14.0-362.el9.x86_64"),
        "el9 in kernel_version but distro_version is 8"
    );
    let rhel = verdict("rhel", "9.4", "x86_64", "5.14.0-427.13.1.el9_4.x86_64");
    assert!(matches!(rhel.verdict, Verdict::Unsupported(_)), "{rhel:?}");
    assert_eq!(rhel.key(), "rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64");
}

#[test]
fn amazon_linux_generations_and_aliases() {
    for (v, k) in [
        ("2", "4.14.104-95.84.amzn2.x86_64"),
        ("2", "5.4.217-126.408.amzn2.x86_64"),
        ("2", "5.10.205-195.807.amzn2.x86_64"),
        ("2", "5.15.148-97.158.amzn2.x86_64"),
        ("2023", "6.1.66-91.160.amzn2023.x86_64"),
    ] {
        key("amazonlinux", v, "x86_64", k);
    }
    assert_eq!(
        key("al2023", "", "amd64", "6.1.66-91.160.amzn2023.x86_64"),
        "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64"
    );
    assert_eq!(
        key(
            "amzn",
            "2023.4.20240416",
            "x86_64",
            "6.1.66-91.160.amzn2023.x86_64"
        ),
        "amazonlinux/2023/x86_64/6.1.66-91.160.amzn2023.x86_64"
    );
    assert_eq!(
        invalid_reason(
            "amazonlinux",
            "2",
            "x86_64",
            "6.1.66-91.160.amzn2023.x86_64"
        ),
        "amzn2023 in kernel_version but distro_version is 2"
    );
    assert!(
        invalid_reason("al2", "2023", "x86_64", "6.1.66-91.160.amzn2023.x86_64")
            .contains("means version 2")
    );
    let al1 = verdict("amzn", "2018.03", "x86_64", "4.14.355-196.647.amzn1.x86_64");
    assert!(matches!(al1.verdict, Verdict::Unsupported(_)));
}

/// Oracle Linux (os-release `ID=ol`): UEK kernels (`elNuek`, any minor of the major) and the
/// Red Hat compatible kernel (`elN_M`, Oracle's own `.0.N` rebuild suffix); 7 is extended
/// support only.
#[test]
fn oracle_linux_uek_and_rhck() {
    assert_eq!(
        key("ol", "9.7", "x86_64", "6.12.0-203.76.7.1.el9uek.x86_64"),
        "oraclelinux/9.7/x86_64/6.12.0-203.76.7.1.el9uek.x86_64"
    );
    assert_eq!(
        key(
            "oracle",
            "8.10",
            "aarch64",
            "5.15.0-100.96.32.el8uek.aarch64"
        ),
        "oraclelinux/8.10/aarch64/5.15.0-100.96.32.el8uek.aarch64"
    );
    assert_eq!(
        key(
            "oraclelinux",
            "9",
            "x86_64",
            "5.14.0-70.13.1.0.3.el9_0.x86_64"
        ),
        "oraclelinux/9.0/x86_64/5.14.0-70.13.1.0.3.el9_0.x86_64"
    );
    assert!(
        invalid_reason("ol", "9.5", "x86_64", "5.15.0-305.176.4.el8uek.x86_64")
            .contains("el8uek in kernel_version but distro_version is 9.5")
    );
    assert!(
        invalid_reason("ol", "9.5", "aarch64", "5.15.0-305.176.4.el9uek.x86_64")
            .contains("built for x86_64 but architecture is aarch64")
    );
    assert!(matches!(
        verdict("ol", "7.9", "x86_64", "5.4.17-2011.6.2.el7uek.x86_64").verdict,
        Verdict::Unsupported(r) if r.contains("extended support")
    ));
    let (dist, version) = osimage::distribution_from_os_image("Oracle Linux Server 9.5");
    assert_eq!(
        key(&dist, &version, "x86_64", "5.15.0-305.176.4.el9uek.x86_64"),
        "oraclelinux/9.5/x86_64/5.15.0-305.176.4.el9uek.x86_64"
    );
}

/// Azure Linux 3 (AKS's node OS): `VERSION-RELEASE.azl3` without an architecture; Kubernetes
/// names it `Microsoft Azure Linux 3.0`; CBL-Mariner 2.0 and Kata's MSHV guest kernel are not
/// built.
#[test]
fn azure_linux_3() {
    assert_eq!(
        key("azurelinux", "3.0", "x86_64", "6.6.150.1-1.azl3"),
        "azurelinux/3.0/x86_64/6.6.150.1-1.azl3"
    );
    assert_eq!(
        key("azl", "3", "aarch64", "6.6.92.2-2.azl3"),
        "azurelinux/3.0/aarch64/6.6.92.2-2.azl3"
    );
    let (dist, version) = osimage::distribution_from_os_image("Microsoft Azure Linux 3.0");
    assert_eq!(
        key(&dist, &version, "x86_64", "6.6.43.1-7.azl3"),
        "azurelinux/3.0/x86_64/6.6.43.1-7.azl3"
    );
    assert!(
        invalid_reason("azurelinux", "3.0", "x86_64", "6.6.43.1-7.azl2")
            .contains("azl2 in kernel_version but distro_version is 3.0")
    );
    assert!(
        invalid_reason("azurelinux", "3.0", "x86_64", "6.6.43-7.azl3")
            .contains("is not an Azure Linux kernel")
    );
    for (d, v, k, why) in [
        ("azurelinux", "3.0", "6.6.137.mshv1-1.azl3", "MSHV"),
        ("mariner", "2.0", "5.15.153.1-2.cm2", "CBL-Mariner 2.0"),
        ("azurelinux", "2.0", "5.15.153.1-2.cm2", "end of life"),
    ] {
        assert!(
            matches!(&verdict(d, v, "x86_64", k).verdict, Verdict::Unsupported(r) if r.contains(why)),
            "{d} {v} {k}"
        );
    }
}

/// SUSE: Leap and SLES kernels carry their code stream (`150600` is 15 SP6), Tumbleweed is keyed
/// by its snapshot, and the os-release and Kubernetes spellings all land on one identity.
#[test]
fn suse_families() {
    assert_eq!(
        key(
            "opensuse-leap",
            "15.6",
            "x86_64",
            "6.4.0-150600.23.73-default"
        ),
        "leap/15.6/x86_64/6.4.0-150600.23.73-default"
    );
    assert_eq!(
        key("leap", "16.0", "aarch64", "6.12.0-160000.26-64kb"),
        "leap/16.0/aarch64/6.12.0-160000.26-64kb"
    );
    assert_eq!(
        key("sles", "15-SP6", "x86_64", "6.4.0-150600.8.20-azure"),
        "sles/15.6/x86_64/6.4.0-150600.8.20-azure"
    );
    let (dist, version) =
        osimage::distribution_from_os_image("SUSE Linux Enterprise Server 15 SP6");
    assert_eq!(
        key(&dist, &version, "x86_64", "6.4.0-150600.23.53-default"),
        "sles/15.6/x86_64/6.4.0-150600.23.53-default"
    );
    assert_eq!(
        key(
            "opensuse-tumbleweed",
            "20250727",
            "x86_64",
            "6.15.8-1-default"
        ),
        "tumbleweed/20250727/x86_64/6.15.8-1-default"
    );
    for (d, v, a, k, why) in [
        (
            "leap",
            "15.6",
            "x86_64",
            "6.4.0-150700.53.3-default",
            "should start with 150600",
        ),
        (
            "sles",
            "16.0",
            "x86_64",
            "6.4.0-150600.23.53-default",
            "should start with 160000",
        ),
        (
            "leap",
            "15.6",
            "x86_64",
            "6.4.0-150600.23.73-64kb",
            "aarch64 kernel",
        ),
        (
            "tumbleweed",
            "20250727",
            "x86_64",
            "6.4.0-150600.23.73-default",
            "not Tumbleweed's",
        ),
        (
            "leap",
            "15.6",
            "x86_64",
            "6.4.0-150600.23.73.x86_64",
            "not a SUSE kernel",
        ),
        (
            "tumbleweed",
            "",
            "x86_64",
            "6.15.8-1-default",
            "distro_version is empty",
        ),
        (
            "tumbleweed",
            "2025",
            "x86_64",
            "6.15.8-1-default",
            "its snapshot",
        ),
    ] {
        assert!(
            invalid_reason(d, v, a, k).contains(why),
            "{d} {v} {k}: {}",
            invalid_reason(d, v, a, k)
        );
    }
    for (d, v, k, why) in [
        (
            "sles",
            "15.7",
            "6.4.0-150700.53.3-default",
            "needs a SUSE registration",
        ),
        ("sles", "15.5", "5.14.21-150500.55.39-default", "LTSS only"),
        (
            "opensuse-leap",
            "15.5",
            "5.14.21-150500.55.39-default",
            "end of life",
        ),
        ("sle-micro", "6.1", "6.4.0-28-default", "read-only root"),
    ] {
        assert!(
            matches!(&verdict(d, v, "x86_64", k).verdict, Verdict::Unsupported(r) if r.contains(why)),
            "{d} {v} {k}: {:?}",
            verdict(d, v, "x86_64", k).verdict
        );
    }
}

#[test]
fn unsupported_os_and_arch_are_not_invalid() {
    assert!(matches!(
        verdict("bottlerocket", "1.26.1", "x86_64", "6.1.112").verdict,
        Verdict::Unsupported(_)
    ));
    assert!(matches!(
        verdict("ubuntu", "22.04", "ppc64le", "5.15.0-91-generic").verdict,
        Verdict::Unsupported(_)
    ));
    assert!(
        invalid_reason("ubunut", "22.04", "x86_64", "5.15.0-91-generic")
            .contains("unknown distribution 'ubunut'")
    );
    assert!(
        invalid_reason("ubuntu", "22.04", "sparc", "5.15.0-91-generic")
            .contains("unknown architecture")
    );
}

#[test]
fn metacharacters_are_always_invalid() {
    for bad in [
        "5.15.0-91-generic;rm -rf /",
        "5.15.0-91-generic$(id)",
        "5.15.0-91-generic`id`",
        "5.15.0-91 generic",
        "5.15.0-91-generic\"",
        "5.15.0-91-generic'",
        "5.15.0-91-generic\nx",
        "../../etc/passwd",
        "5.15.0/91-generic",
        "${{ github.token }}",
    ] {
        let reason = invalid_reason("ubuntu", "22.04", "x86_64", bad);
        assert!(
            reason.contains("inject") || reason.contains("'..'"),
            "{bad:?}: {reason}"
        );
    }
    assert!(
        invalid_reason("ubuntu;id", "22.04", "x86_64", "5.15.0-91-generic")
            .contains("distribution contains ';'")
    );
}

#[test]
fn keys_round_trip() {
    let id = KernelIdentity::from_key("debian/13/x86_64/6.12.74+deb13+1-amd64").unwrap();
    assert_eq!(id.key(), "debian/13/x86_64/6.12.74+deb13+1-amd64");
    assert!(KernelIdentity::from_key("debian/13/x86_64").is_err());
    assert!(matches!(
        KernelIdentity::from_key("rhel/9.4/x86_64/5.14.0-427.13.1.el9_4.x86_64"),
        Err(Rejection::Unsupported(_))
    ));
}

#[test]
fn os_release_parsing() {
    let f = parse_os_release(
        "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\n# comment\nPRETTY_NAME='Ubuntu 22.04.4 LTS'\n",
    );
    assert_eq!(f["ID"], "ubuntu");
    assert_eq!(f["VERSION_ID"], "22.04");
    assert_eq!(f["PRETTY_NAME"], "Ubuntu 22.04.4 LTS");
}

proptest! {
    #[test]
    fn no_input_makes_the_parser_panic(d in ".{0,20}", v in ".{0,20}", a in ".{0,12}", k in ".{0,80}") {
        let c = verdict(&d, &v, &a, &k);
        if let Verdict::Valid(id) = &c.verdict {
            prop_assert_eq!(&id.key(), &c.key());
        }
    }

    #[test]
    fn kernel_shaped_noise_never_panics(
        d in "(ubuntu|debian|fedora|centos|amazonlinux|almalinux|rocky|rhel|al2)",
        v in "[0-9.]{0,8}",
        a in "(x86_64|aarch64|amd64|arm64)",
        k in "[0-9a-z._+~-]{0,60}",
    ) {
        let c = verdict(&d, &v, &a, &k);
        if let Some(id) = c.identity() {
            let back = KernelIdentity::from_key(&id.key());
            prop_assert_eq!(back.as_ref(), Ok(id));
        }
    }

    #[test]
    fn any_metacharacter_makes_an_identity_invalid(
        prefix in "[0-9.]{1,8}",
        meta in prop::sample::select(vec![";", "$", "`", " ", "\"", "'", "\n", "..", "/", "|", "&", "\\"]),
    ) {
        let k = format!("{prefix}{meta}-91-generic");
        let is_invalid = matches!(verdict("ubuntu", "22.04", "x86_64", &k).verdict, Verdict::Invalid(_));
        prop_assert!(is_invalid);
    }
}
