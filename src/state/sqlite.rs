//! The SQLite store: `kfleet.db` in the state directory, in WAL mode with `synchronous=FULL`, so a
//! committed claim survives a crash or power loss, and any number of processes on the machine
//! share it (writers wait up to the busy timeout for each other).

use super::{INT_COLUMNS, Param, RawRow, StoreError, TEXT_COLUMNS};
use crate::locks::Lock;
use crate::text::Cause;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<rusqlite::Connection>>,
    path: PathBuf,
}

fn to_value(p: Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        Param::Text(Some(s)) => Value::Text(s),
        Param::Int(Some(i)) => Value::Integer(i),
        Param::Text(None) | Param::Int(None) => Value::Null,
    }
}

/// `$1` placeholders as SQLite writes them, and its clock (one host: the same for every process).
fn dialect(sql: &str) -> String {
    sql.replace(super::DB_NOW, "CAST(unixepoch('subsec') * 1000 AS INTEGER)")
        .replace('$', "?")
}

fn raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    let mut out = RawRow {
        texts: Default::default(),
        ints: Default::default(),
    };
    for (slot, col) in out.texts.iter_mut().zip(TEXT_COLUMNS) {
        *slot = row.get(col)?;
    }
    for (slot, col) in out.ints.iter_mut().zip(INT_COLUMNS) {
        *slot = row.get(col)?;
    }
    Ok(out)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let label = path.display().to_string();
        let fail = |source: Cause| StoreError::Unavailable {
            store: label.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsio::create_private_dir(dir).map_err(|e| fail(Cause::of(e)))?;
        }
        // The database (and the WAL and shared-memory files SQLite makes with its mode) is 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(Cause::of(e))),
            }
        }
        let mut conn = rusqlite::Connection::open(path).map_err(|e| fail(Cause::of(e)))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(Cause::of(e)))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| fail(Cause::of(e)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(Cause::text(format!(
                "cannot switch to WAL mode (got {mode}); is the file on a network file system?"
            ))));
        }
        conn.execute_batch("PRAGMA synchronous=FULL")
            .map_err(|e| fail(Cause::of(e)))?;
        // Processes that open a new database at once race to create the schema: the loser sees
        // the winner's tables on its next try.
        let mut tries = 0;
        loop {
            match super::migrations::runner().run(&mut conn) {
                Ok(_) => break,
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50 * tries));
                }
                Err(e) => {
                    return Err(StoreError::Invalid {
                        store: label,
                        source: Cause::from(format!(
                            "cannot create or migrate the schema: {e}; move the file aside to start afresh"
                        )),
                    });
                }
            }
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// `ledger.jsonl` beside the database, when it was never imported.
    pub fn ledger_to_import(&self) -> Option<PathBuf> {
        let ledger = self.path.parent()?.join("ledger.jsonl");
        ledger.exists().then_some(ledger)
    }

    fn fail(&self, source: Cause) -> StoreError {
        StoreError::Unavailable {
            store: self.label(),
            source,
        }
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let done = tokio::time::timeout(
            super::OP_TIMEOUT + BUSY_TIMEOUT,
            tokio::task::spawn_blocking(move || f(&mut conn.locked())),
        )
        .await
        .map_err(|_| self.fail("timed out waiting for the database".into()))?;
        done.map_err(|e| self.fail(Cause::of(e)))?
            .map_err(|e| self.fail(Cause::of(e)))
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<super::BuildRecord>, StoreError> {
        let sql = dialect(sql);
        let rows = self
            .with(move |c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let values: Vec<_> = params.into_iter().map(to_value).collect();
                let rows = stmt.query_map(rusqlite::params_from_iter(values), raw)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let label = self.label();
        rows.into_iter().map(|r| r.decode(&label)).collect()
    }

    pub(super) async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        let sql = dialect(sql);
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let values: Vec<_> = params.into_iter().map(to_value).collect();
            Ok(stmt.execute(rusqlite::params_from_iter(values))? as u64)
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT count(*) FROM builds", [], |_| Ok(())))
            .await
    }

    /// The claim in one `BEGIN IMMEDIATE` transaction: insert, or read the open build. `true`
    /// with the row this insert made; `false` with the open build that held it.
    pub(super) async fn claim(
        &self,
        insert: &str,
        params: Vec<Param>,
        select: &str,
        lookup: Vec<Param>,
    ) -> Result<Option<(bool, RawRow)>, StoreError> {
        let (insert, select) = (dialect(insert), dialect(select));
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let first = |sql: &str, values: Vec<Param>| -> rusqlite::Result<Option<RawRow>> {
                let mut stmt = tx.prepare_cached(sql)?;
                let values: Vec<_> = values.into_iter().map(to_value).collect();
                let mut rows = stmt.query_map(rusqlite::params_from_iter(values), raw)?;
                rows.next().transpose()
            };
            let found = match first(&insert, params)? {
                Some(won) => Some((true, won)),
                None => first(&select, lookup)?.map(|held| (false, held)),
            };
            tx.commit()?;
            Ok(found)
        })
        .await
    }
}
