//! Distribution and version from a kubelet `osImage` (the node's os-release `PRETTY_NAME`).

use regex::Regex;
use std::sync::LazyLock;

#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by the tests"
)]
static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d+(?:\.\d+)*)\b").expect("built-in pattern compiles"));

/// Maps an osImage such as `Ubuntu 22.04.4 LTS` or `Amazon Linux 2023.4.20240416` to a
/// distribution slug and a version. Unknown systems come back as a slug (`bottlerocket`,
/// `flatcar`, ...) or `unknown`, so the identity check reports them as unsupported.
pub fn distribution_from_os_image(os_image: &str) -> (String, String) {
    let lower = os_image.trim().to_ascii_lowercase();
    let version = VERSION
        .captures(&lower)
        .map(|c| c[1].to_string())
        .unwrap_or_default();
    const PREFIXES: &[(&str, &str)] = &[
        ("ubuntu", "ubuntu"),
        ("debian", "debian"),
        ("fedora coreos", "fedora-coreos"),
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
        ("opensuse", "opensuse"),
        ("oracle linux", "ol"),
        ("cbl-mariner", "mariner"),
        ("azure linux", "azurelinux"),
        ("vmware photon", "photon"),
        ("alpine", "alpine"),
        ("windows", "windows"),
    ];
    let slug = PREFIXES
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .map(|(_, slug)| *slug)
        .unwrap_or("unknown");
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
        ] {
            assert_eq!(
                distribution_from_os_image(image),
                (dist.to_string(), ver.to_string()),
                "{image}"
            );
        }
    }
}
