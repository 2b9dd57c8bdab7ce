//! A throwaway OCI registry for tests: CNCF distribution (Debian's `docker-registry`) serving a
//! temporary directory on a free loopback port, optionally behind htpasswd (Basic) auth.
//! Stopped when dropped. `.ci/run` installs the package when a machine lacks it.

use std::process::{Child, Command, Stdio};

/// The login the authenticated registry accepts.
pub const USER: &str = "kfleet";
pub const PASSWORD: &str = "s3cret-pass";
/// `htpasswd -Bbn kfleet s3cret-pass`.
const HTPASSWD: &str = "kfleet:$2y$05$tGnSk4dn1mHAGhJJMt0n..UX0.XDQNN.D89F3YxfEGesUmzgF9FWK\n";

pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: bool) -> Self {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "no OCI registry: install the docker-registry package (apt-get install docker-registry; .ci/run does this)"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kfleet-tests\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kfleet-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let file = dir.path().join("config.yml");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            _dir: dir,
            port,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not listen on 127.0.0.1:{port} within 10 s");
    }

    /// `oci://127.0.0.1:PORT/REPOSITORY`.
    pub fn store(&self, repository: &str) -> String {
        format!("oci://127.0.0.1:{}/{repository}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPOSITORY:TAG`, as skopeo names it.
    pub fn docker(&self, repository: &str, tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repository}:{tag}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
