//! The PostgreSQL store, for several replicas of the build service: a connection pool with short
//! timeouts (a database that is down makes operations fail fast, not hang), the schema migrated
//! once under an advisory lock however many replicas start at once, and TLS (rustls) when the URL
//! asks for it with `sslmode=require`, `verify-ca` or `verify-full`: the server's certificate and
//! host name are always verified, against `sslrootcert=FILE` or the system's roots.

use super::{INT_COLUMNS, Param, RawRow, StoreError, TEXT_COLUMNS};
use crate::text::Cause;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// Connecting, and waiting for a pooled connection, give up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: usize = 16;
/// Serializes the migrations of replicas that start together.
const MIGRATION_LOCK: i64 = 0x6b66_6c65_6574;

#[derive(Clone)]
pub struct PgStore {
    pool: deadpool_postgres::Pool,
    config: Arc<tokio_postgres::Config>,
    /// The TLS connector, when the URL asks for TLS.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    label: String,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

fn boxed(p: Param) -> Box<dyn ToSql + Sync + Send> {
    match p {
        Param::Text(t) => Box::new(t),
        Param::Int(i) => Box::new(i),
    }
}

/// A PostgreSQL URL parsed once by the driver, with what the driver does not take (`verify-ca`,
/// `verify-full`, `sslrootcert`) read apart. The credentials run to the first `@`, as the driver
/// reads them, so a password holding `/`, `?` or `&` never reaches the query or a label.
struct ParsedUrl {
    config: tokio_postgres::Config,
    root_cert: Option<std::path::PathBuf>,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("not a PostgreSQL URL: give postgres://USER@HOST/DB")?;
        let (credentials, location) = match rest.find('@') {
            Some(at) => rest.split_at(at + 1),
            None => ("", rest),
        };
        let (base, query) = location.split_once('?').unwrap_or((location, ""));
        if base.contains('@') {
            return Err(
                "the URL has more than one '@' before its host: write an '@' in the user or password as %40"
                    .into(),
            );
        }
        let mut kept = Vec::new();
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    let mode = match value {
                        "disable" | "allow" | "prefer" => "disable",
                        // The certificate and host name are verified whichever of these is asked.
                        "require" | "verify-ca" | "verify-full" => "require",
                        other => {
                            return Err(format!(
                                "sslmode={other}: use disable, require or verify-full"
                            ));
                        }
                    };
                    kept.push(format!("sslmode={mode}"));
                }
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value)),
                _ => kept.push(pair.to_string()),
            }
        }
        let driver_url = if kept.is_empty() {
            format!("{scheme}://{credentials}{base}")
        } else {
            format!("{scheme}://{credentials}{base}?{}", kept.join("&"))
        };
        let config: tokio_postgres::Config =
            driver_url.parse().map_err(|e: tokio_postgres::Error| {
                format!("not a PostgreSQL URL ({})", describe(&e))
            })?;
        let parsed = Self { config, root_cert };
        if parsed.root_cert.is_some() && !parsed.tls() {
            return Err("sslrootcert is given without sslmode=verify-full (or require)".into());
        }
        Ok(parsed)
    }

    fn tls(&self) -> bool {
        self.config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
    }

    /// `postgres://USER@HOST:PORT/DB` from the parsed parts: never a password, whatever the URL holds.
    fn label(&self) -> String {
        label_of(&self.config)
    }
}

/// A store's name in messages, built from the parsed user, hosts, ports and database.
fn label_of(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                tokio_postgres::config::Host::Tcp(name) if name.contains(':') => {
                    format!("[{name}]")
                }
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// A rustls connector trusting `root_cert` (PEM), or the system's roots.
fn tls_connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {shown} holds no certificate"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "sslmode asks for TLS, but this system has no root certificates; give sslrootcert=FILE"
                        .into(),
                );
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn borrowed(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn raw(row: &tokio_postgres::Row) -> Result<RawRow, tokio_postgres::Error> {
    let mut out = RawRow {
        texts: Default::default(),
        ints: Default::default(),
    };
    for (slot, col) in out.texts.iter_mut().zip(TEXT_COLUMNS) {
        *slot = row.try_get(col)?;
    }
    for (slot, col) in out.ints.iter_mut().zip(INT_COLUMNS) {
        *slot = row.try_get(col)?;
    }
    Ok(out)
}

/// The statement with the database's clock in PostgreSQL's words (every replica reads the same
/// one).
fn dialect(sql: &str) -> String {
    sql.replace(
        super::DB_NOW,
        "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    )
}

/// What went wrong, with the server's own message when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::text::error_chain(e),
    }
}

impl PgStore {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let parsed = ParsedUrl::parse(url).map_err(|message| StoreError::Invalid {
            store: super::POSTGRES_URL.into(),
            source: Cause::from(message),
        })?;
        let label = parsed.label();
        let invalid = |message: String| StoreError::Invalid {
            store: label.clone(),
            source: Cause::from(message),
        };
        let tls = parsed.tls();
        let ParsedUrl {
            mut config,
            root_cert,
        } = parsed;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("kfleet");
        let tls = if tls {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Some(tls_connector(root_cert.as_deref()).map_err(invalid)?)
        } else {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            None
        };
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => {
                deadpool_postgres::Manager::from_config(config.clone(), tls.clone(), manager_config)
            }
            None => deadpool_postgres::Manager::from_config(
                config.clone(),
                tokio_postgres::NoTls,
                manager_config,
            ),
        };
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Invalid {
                store: label.clone(),
                source: Cause::of(e),
            })?;
        Ok(Self {
            pool,
            config: Arc::new(config),
            tls,
            label,
            migrated: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    pub fn label(&self) -> String {
        self.label.clone()
    }

    fn unavailable(&self, message: String) -> StoreError {
        StoreError::Unavailable {
            store: self.label.clone(),
            source: Cause::from(message),
        }
    }

    /// Creates or migrates the schema once per process, under an advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()).await.map(|(client, c)| {
                        (client, tokio::spawn(async move { c.await.map(|_| ()) }))
                    }),
                    None => self
                        .config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map(|(client, c)| (client, tokio::spawn(c))),
                };
                let (mut client, task) = connected.map_err(|e| self.unavailable(describe(&e)))?;
                let result = async {
                    client
                        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                        .await
                        .map_err(|e| self.unavailable(describe(&e)))?;
                    let ran = super::migrations::runner().run_async(&mut client).await;
                    let _ = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                        .await;
                    ran.map(|_| ()).map_err(|e| StoreError::Invalid {
                        store: self.label.clone(),
                        source: Cause::from(format!("cannot create or migrate the schema: {e}")),
                    })
                }
                .await;
                drop(client);
                task.abort();
                result
            })
            .await
            .map(|_| ())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.migrate().await?;
        self.pool.get().await.map_err(|e| {
            let message = match &e {
                deadpool_postgres::PoolError::Backend(pg) => describe(pg),
                deadpool_postgres::PoolError::Timeout(_) => {
                    "no connection within the timeout (is the server up and reachable?)".into()
                }
                other => other.to_string(),
            };
            self.unavailable(message)
        })
    }

    /// Runs `f` within the operation timeout.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(super::OP_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(self.unavailable("timed out waiting for the database".into())))
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<super::BuildRecord>, StoreError> {
        let sql = &dialect(sql);
        self.timed(async {
            let client = self.client().await?;
            let values: Vec<_> = params.into_iter().map(boxed).collect();
            let refs = borrowed(&values);
            let stmt = client
                .prepare_cached(sql)
                .await
                .map_err(|e| self.unavailable(describe(&e)))?;
            let rows = client
                .query(&stmt, &refs)
                .await
                .map_err(|e| self.unavailable(describe(&e)))?;
            rows.iter()
                .map(|r| {
                    raw(r)
                        .map_err(|e| self.unavailable(describe(&e)))?
                        .decode(&self.label)
                })
                .collect()
        })
        .await
    }

    pub(super) async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        let sql = &dialect(sql);
        self.timed(async {
            let client = self.client().await?;
            let values: Vec<_> = params.into_iter().map(boxed).collect();
            let refs = borrowed(&values);
            let stmt = client
                .prepare_cached(sql)
                .await
                .map_err(|e| self.unavailable(describe(&e)))?;
            client
                .execute(&stmt, &refs)
                .await
                .map_err(|e| self.unavailable(describe(&e)))
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let client = self.client().await?;
            client
                .query_one("SELECT count(*) FROM builds", &[])
                .await
                .map(|_| ())
                .map_err(|e| self.unavailable(describe(&e)))
        })
        .await
    }

    /// The claim in one transaction: the insert waits for a concurrent insert of the same open
    /// build to commit or roll back, then does nothing or inserts; the read sees what won. `true`
    /// with the row this insert made; `false` with the open build that held it.
    pub(super) async fn claim(
        &self,
        insert: &str,
        params: Vec<Param>,
        select: &str,
        lookup: Vec<Param>,
    ) -> Result<Option<(bool, RawRow)>, StoreError> {
        let (insert, select) = (&dialect(insert), &dialect(select));
        self.timed(async {
            let mut client = self.client().await?;
            let fail = |e: tokio_postgres::Error| self.unavailable(describe(&e));
            let tx = client.transaction().await.map_err(fail)?;
            let first = async |sql: &str, values: Vec<Param>| {
                let values: Vec<_> = values.into_iter().map(boxed).collect();
                match tx.query_opt(sql, &borrowed(&values)).await.map_err(fail)? {
                    Some(row) => raw(&row).map(Some).map_err(fail),
                    None => Ok(None),
                }
            };
            let found = match first(insert, params).await? {
                Some(won) => Some((true, won)),
                None => first(select, lookup).await?.map(|held| (false, held)),
            };
            tx.commit().await.map_err(fail)?;
            Ok(found)
        })
        .await
    }
}
