//! The PostgreSQL store, for several replicas of the build service: a connection pool with short
//! timeouts (a database that is down makes operations fail fast, not hang), the schema migrated
//! once under an advisory lock however many replicas start at once.

use super::{INT_COLUMNS, Param, RawRow, StoreError, TEXT_COLUMNS};
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
    label: String,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

fn boxed(p: Param) -> Box<dyn ToSql + Sync + Send> {
    match p {
        Param::Text(t) => Box::new(t),
        Param::Int(i) => Box::new(i),
    }
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

/// What went wrong, with the server's own message when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::net::error_chain(e),
    }
}

impl PgStore {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let label = super::redact_url(url);
        let invalid = |message: String| StoreError::Invalid {
            store: label.clone(),
            message,
        };
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                invalid(format!("not a PostgreSQL URL ({})", describe(&e)))
            })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("kfleet");
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            pool,
            config: Arc::new(config),
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
            message,
        }
    }

    /// Creates or migrates the schema once per process, under an advisory lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let (mut client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.unavailable(describe(&e)))?;
                let task = tokio::spawn(connection);
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
                        message: format!("cannot create or migrate the schema: {e}"),
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
    /// build to commit or roll back, then does nothing or inserts; the read sees what won.
    pub(super) async fn claim(
        &self,
        insert: &str,
        params: Vec<Param>,
        select: &str,
        lookup: Vec<Param>,
    ) -> Result<Option<super::Claim>, StoreError> {
        self.timed(async {
            let mut client = self.client().await?;
            let fail = |e: tokio_postgres::Error| self.unavailable(describe(&e));
            let tx = client.transaction().await.map_err(fail)?;
            let values: Vec<_> = params.into_iter().map(boxed).collect();
            let refs = borrowed(&values);
            let won = tx.query_opt(insert, &refs).await.map_err(fail)?;
            let held = match won {
                Some(_) => None,
                None => {
                    let values: Vec<_> = lookup.into_iter().map(boxed).collect();
                    let refs = borrowed(&values);
                    tx.query_opt(select, &refs).await.map_err(fail)?
                }
            };
            tx.commit().await.map_err(fail)?;
            let decode = |row: &tokio_postgres::Row| {
                raw(row)
                    .map_err(|e| self.unavailable(describe(&e)))?
                    .decode(&self.label)
            };
            Ok(match (won, held) {
                (Some(w), _) => Some(super::Claim::Won(decode(&w)?)),
                (None, Some(h)) => Some(super::Claim::Held(decode(&h)?)),
                (None, None) => None,
            })
        })
        .await
    }
}
