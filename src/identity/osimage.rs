//! Distribution and version from a kubelet `osImage` (the node's os-release `PRETTY_NAME`).

use regex::Regex;
use std::sync::LazyLock;

#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by the tests"
)]
static VERSION: LazyLock<Regex> = LazyLock::new(|| {
    // `v1.11.5` (Talos) is 1.11.5, not 11.5; `15 SP6` (SUSE) is 15.6.
    Regex::new(r"\bv?(\d+(?:\.\d+)*)(?:\s+sp(\d+))?\b").expect("built-in pattern compiles")
});

/// Maps an osImage such as `Ubuntu 22.04.4 LTS` or `Amazon Linux 2023.4.20240416` to a
/// distribution slug and a version. Unknown systems come back as a slug (`bottlerocket`,
/// `flatcar`, ...) or `unknown`, so the identity check reports them as unsupported.
pub fn distribution_from_os_image(os_image: &str) -> (String, String) {
    let lower = os_image.trim().to_ascii_lowercase();
    let version = VERSION
        .captures(&lower)
        .map(|c| match c.get(2) {
            Some(sp) => format!("{}.{}", &c[1], sp.as_str()),
            None => c[1].to_string(),
        })
        .unwrap_or_default();
    const PREFIXES: &[(&str, &str)] = &[
        ("ubuntu", "ubuntu"),
        ("debian", "debian"),
        // Fedora CoreOS runs Fedora's kernels: its release is Fedora's (40.20240616.3.0 is 40).
        ("fedora coreos", "fedora"),
        ("fedora", "fedora"),
        ("centos", "centos"),
        ("amazon linux", "amazonlinux"),
        ("almalinux", "almalinux"),
        ("rocky", "rocky"),
        ("red hat enterprise linux coreos", "rhcos"),
        ("red hat", "rhel"),
        ("bottlerocket", "bottlerocket"),
        ("flatcar", "flatcar"),
        ("container-optimized os", "cos"),
        ("talos", "talos"),
        ("suse", "sles"),
        ("opensuse leap", "opensuse-leap"),
        ("opensuse tumbleweed", "opensuse-tumbleweed"),
        ("opensuse", "opensuse"),
        ("oracle linux", "ol"),
        ("cbl-mariner", "mariner"),
        // AKS: `Microsoft Azure Linux 3.0`; `CBL-Mariner/Linux` before it.
        ("microsoft azure linux", "azurelinux"),
        ("azure linux", "azurelinux"),
        ("vmware photon", "photon"),
        ("alpine", "alpine"),
        ("windows", "windows"),
    ];
    let (prefix, slug) = PREFIXES
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .copied()
        .unwrap_or(("", "unknown"));
    let version = match prefix {
        "fedora coreos" => version.split('.').next().unwrap_or_default().to_string(),
        // A rolling release has no version in its name; its snapshot is in os-release only.
        "opensuse tumbleweed" => String::new(),
        _ => version,
    };
    (slug.to_string(), version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_images_from_real_kubelets() {
        for (image, dist, ver) in [
            ("Ubuntu 22.04.4 LTS", "ubuntu", "22.04.4"),
            ("Amazon Linux 2", "amazonlinux", "2"),
            (
                "Amazon Linux 2023.4.20240416",
                "amazonlinux",
                "2023.4.20240416",
            ),
            ("Debian GNU/Linux 12 (bookworm)", "debian", "12"),
            ("CentOS Stream 9", "centos", "9"),
            ("Fedora Linux 40 (Cloud Edition)", "fedora", "40"),
            (
                "Bottlerocket OS 1.26.1 (aws-k8s-1.31)",
                "bottlerocket",
                "1.26.1",
            ),
            ("Rocky Linux 9.3 (Blue Onyx)", "rocky", "9.3"),
            ("Container-Optimized OS from Google", "cos", ""),
            ("SUSE Linux Enterprise Server 15 SP6", "sles", "15.6"),
            ("openSUSE Leap 15.6", "opensuse-leap", "15.6"),
            ("openSUSE Tumbleweed", "opensuse-tumbleweed", ""),
            ("Talos (v1.11.5)", "talos", "1.11.5"),
            ("Fedora CoreOS 40.20240616.3.0", "fedora", "40"),
        ] {
            assert_eq!(
                distribution_from_os_image(image),
                (dist.to_string(), ver.to_string()),
                "{image}"
            );
        }
    }
}
