//! A certificate authority of a test's own and a server certificate for 127.0.0.1 it signs
//! (`openssl`, two days), for fixture servers that accept TLS only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; it must succeed.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a key `key` and a certificate `cert` for `subject` into `dir`, signed by the CA in
/// `ca.crt`/`ca.key` there with the extensions `ext`.
fn signed(dir: &Path, subject: &str, key: &str, cert: &str, ext: &str) {
    let csr = format!("{cert}.csr");
    let ext_file = format!("{cert}.ext");
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", key, "-out", &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            cert,
        ],
    );
}

/// Writes `ca.crt` and `ca.key` into `dir` and the server's `key` and `cert` where asked;
/// returns the CA certificate's path.
pub fn issue(dir: &Path, key: &str, cert: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kfleet test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    signed(
        dir,
        "/CN=127.0.0.1",
        key,
        cert,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    dir.join("ca.crt")
}

/// Writes a client certificate `NAME.crt` and its key `NAME.key` into `dir`: signed by the CA
/// `issue` wrote there when `trusted`, else self-signed (a client no server of the test trusts).
pub fn issue_client(dir: &Path, name: &str, trusted: bool) -> (PathBuf, PathBuf) {
    let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
    let subject = format!("/CN={name}");
    if trusted {
        signed(
            dir,
            &subject,
            &key,
            &cert,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
    } else {
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
                "-keyout", &key, "-out", &cert,
            ],
        );
    }
    (dir.join(cert), dir.join(key))
}
