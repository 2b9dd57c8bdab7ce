//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into a temporary directory
//! and `pg_ctl start` on a free loopback port, as the unprivileged `postgres` user when run as
//! root (the server refuses root). Stopped when dropped. `.ci/run` installs the server package
//! when a machine lacks it.

#[path = "certs.rs"]
#[allow(dead_code)] // the client certificates are for other tests
mod certs;

use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// `runuser -u postgres --` when running as root.
    as_user: Vec<String>,
    /// Serves TLS only (a certificate for 127.0.0.1 from a test CA).
    tls: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin: install the postgresql package \
             (apt-get install postgresql; .ci/run does this)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    pub fn start() -> Self {
        let pg = Self::init(false);
        pg.start_again();
        pg
    }

    /// A server that accepts TLS connections only, with a certificate for 127.0.0.1 signed by a
    /// CA of its own; returns the CA's certificate (PEM) beside it.
    pub fn start_with_tls() -> (Self, PathBuf) {
        let pg = Self::init(true);
        let dir = pg.dir.path();
        let ca = certs::issue(dir, "data/server.key", "data/server.crt");
        std::fs::write(
            pg.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            pg.data().join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        pg.own();
        pg.start_again();
        (pg, ca)
    }

    /// Gives the cluster's files to the user the server runs as.
    fn own(&self) {
        if !self.as_user.is_empty() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory to postgres");
        }
    }

    fn init(tls: bool) -> Self {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("kfleet-pg-")
            .tempdir()
            .unwrap();
        let as_user = if is_root() {
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ]
        } else {
            Vec::new()
        };
        let pg = Self {
            bin,
            dir,
            port: free_port(),
            as_user,
            tls,
        };
        pg.own();
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "kfleet",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` of the server's binaries, as the cluster's owner.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://kfleet@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://kfleet@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits until it accepts.
    pub fn start_again(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
