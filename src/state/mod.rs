//! The shared build state: which builds were claimed, dispatched and settled, keyed by identity
//! and driver version, with the request id nodes were given. One interface over two stores:
//! SQLite in the state directory (one machine, any number of processes) and PostgreSQL (several
//! replicas of the build service). A claim is one atomic statement against a unique index on the
//! open builds, so however many processes ask, one of them dispatches.

mod import;
pub mod ledger;
mod postgres;
mod sqlite;

/// How an invalid PostgreSQL URL is named in errors (never the URL itself: it may hold a password).
pub const POSTGRES_URL: &str = "the PostgreSQL URL";

use crate::text::Cause;
use chrono::{DateTime, TimeZone, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

refinery::embed_migrations!("migrations");

/// How a finished build ended, as the store records it (its `conclusion`): its run's conclusion
/// as GitHub names it, or one of kfleet's own. One type, so the words are written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending<'a> {
    /// The run succeeded.
    Success,
    /// The artifact turned up without a run of this build's (another dispatcher built it).
    Available,
    /// The forge no longer knows the run (retention, a sandbox that restarted): over, and saying
    /// nothing about the kernel.
    RunNotFound,
    /// Any other conclusion: a run's `failure`, `cancelled`, ..., or why no run was made.
    Other(&'a str),
}

impl<'a> Ending<'a> {
    pub fn of(conclusion: &'a str) -> Self {
        match conclusion {
            "success" => Self::Success,
            "available" => Self::Available,
            "run-not-found" => Self::RunNotFound,
            other => Self::Other(other),
        }
    }

    /// The word the store keeps.
    pub fn as_str(self) -> &'a str {
        match self {
            Self::Success => "success",
            Self::Available => "available",
            Self::RunNotFound => "run-not-found",
            Self::Other(text) => text,
        }
    }

    /// The driver was built (by this build's run or another's).
    pub fn is_built(self) -> bool {
        matches!(self, Self::Success | Self::Available)
    }
}

/// Where a build stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A process holds the right to dispatch it until its lease ends.
    Claimed,
    /// A run was started (`run_id` says which).
    Dispatched,
    /// The run ended (`conclusion` says how), or the artifact turned up without one.
    Finished,
    /// Not done within the deadline.
    TimedOut,
    /// Cancelled after its deadline.
    Cancelled,
    /// Never dispatched (`conclusion` says why).
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Dispatched => "dispatched",
            Self::Finished => "finished",
            Self::TimedOut => "timed-out",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Claimed,
            Self::Dispatched,
            Self::Finished,
            Self::TimedOut,
            Self::Cancelled,
            Self::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Claimed or dispatched: the build may still produce its artifact.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Claimed | Self::Dispatched)
    }
}

/// One build as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildRecord {
    pub request_id: String,
    pub key: String,
    pub driver_version: String,
    pub phase: Phase,
    pub run_id: Option<u64>,
    pub url: Option<String>,
    /// The run's conclusion, or why the build was settled without one.
    pub conclusion: Option<String>,
    /// The process that holds a claim.
    pub owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The claim's fencing token: raised by every take-over; a write on a claim names the token
    /// it holds, so one from a holder that lost the claim changes nothing.
    pub fence: i64,
    pub accepted_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl BuildRecord {
    /// When the build started, for deadlines: its dispatch, or its claim before that.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.dispatched_at.unwrap_or(self.accepted_at)
    }

    /// A claim whose holder did not dispatch within its lease and `grace` after it (the longest
    /// a dispatch sent at the end of the lease can take).
    pub fn claim_expired(&self, now: DateTime<Utc>, grace: Duration) -> bool {
        self.phase == Phase::Claimed
            && self.lease_until.is_none_or(|l| {
                l + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::zero()) < now
            })
    }
}

/// Which build a write is for: its primary key (a request id names one build per identity and
/// driver version; a batch run's id names several).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildId<'a> {
    pub request_id: &'a str,
    pub key: &'a str,
    pub driver_version: &'a str,
}

impl BuildId<'_> {
    /// Its key as the first three parameters of a statement.
    fn params(self) -> Vec<Param> {
        vec![
            text(self.request_id),
            text(self.key),
            text(self.driver_version),
        ]
    }
}

impl<'a> From<&'a BuildRecord> for BuildId<'a> {
    fn from(r: &'a BuildRecord) -> Self {
        Self {
            request_id: &r.request_id,
            key: &r.key,
            driver_version: &r.driver_version,
        }
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This caller holds the new claim and dispatches.
    Won(BuildRecord),
    /// Another caller's build is open for this identity and driver version.
    Held(BuildRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or answered with an error; retrying later may work.
    #[error("state store {store}: {source}")]
    Unavailable { store: String, source: Cause },
    /// The store holds something kfleet cannot read.
    #[error("state store {store}: {source}")]
    Invalid { store: String, source: Cause },
}

/// Which store to open: `--state` (or `KFLEET_STATE_URL`), else SQLite in the state directory.
#[derive(Clone, Debug, PartialEq)]
pub enum StateSpec {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StateSpec {
    /// `postgres://…` or `postgresql://…`, `sqlite:PATH` (a database file), or a directory.
    pub fn parse(value: &str, state_dir: &Path) -> Result<Self, String> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Self::Postgres(value.to_string()));
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(
                    "a sqlite: state names no file; write sqlite:/path/to/kfleet.db".into(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if value.is_empty() {
            return Ok(Self::Sqlite(state_dir.join(DB_FILE)));
        }
        Err(format!(
            "--state {}: not a state store; give postgres://USER@HOST/DB or sqlite:PATH",
            scheme_of(value)
        ))
    }
}

/// The SQLite file in a state directory.
pub const DB_FILE: &str = "kfleet.db";

/// What a user named as a store, without anything that could be a secret: its scheme only.
fn scheme_of(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "the value".to_string(),
    }
}

/// How long a store operation may take before the store counts as unreachable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The state store: cheap to clone, shared by the planner, the service and the commands.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// A value bound to a statement.
#[derive(Clone, Debug)]
enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

fn text(s: &str) -> Param {
    Param::Text(Some(s.to_string()))
}

fn opt_text(s: Option<&str>) -> Param {
    Param::Text(s.map(str::to_string))
}

fn millis(t: DateTime<Utc>) -> Param {
    Param::Int(Some(t.timestamp_millis()))
}

const COLUMNS: &str = "request_id, key, driver_version, phase, run_id, url, conclusion, owner, \
     lease_until, accepted_at, dispatched_at, updated_at, fence";

const OPEN: &str = "phase IN ('claimed', 'dispatched')";

/// The database's own clock, in milliseconds since the epoch: leases are set and compared with
/// it, never with a replica's clock (two replicas whose clocks differ would disagree on when a
/// lease ends). Each backend writes it in its own dialect.
const DB_NOW: &str = "{db_now_ms}";

fn millis_of(d: Duration) -> Param {
    Param::Int(Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// One row as the backends read it: text and integer columns by position.
struct RawRow {
    texts: [Option<String>; 7],
    ints: [Option<i64>; 6],
}

/// Column positions in [`COLUMNS`]: which are text and which integers.
const TEXT_COLUMNS: [usize; 7] = [0, 1, 2, 3, 5, 6, 7];
const INT_COLUMNS: [usize; 6] = [4, 8, 9, 10, 11, 12];

impl RawRow {
    fn decode(self, store: &str) -> Result<BuildRecord, StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            store: store.to_string(),
            source: Cause::from(message),
        };
        let [rid, key, dv, phase, url, conclusion, owner] = self.texts;
        let [run_id, lease, accepted, dispatched, updated, fence] = self.ints;
        let time = |ms: Option<i64>| ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        let phase_text = phase.unwrap_or_default();
        let phase = Phase::parse(&phase_text).ok_or_else(|| {
            invalid(format!(
                "a build row has phase {phase_text:?}, which this kfleet does not know (written by a newer version?)"
            ))
        })?;
        Ok(BuildRecord {
            request_id: rid.unwrap_or_default(),
            key: key.unwrap_or_default(),
            driver_version: dv.unwrap_or_default(),
            phase,
            run_id: run_id.and_then(|r| u64::try_from(r).ok()),
            url,
            conclusion,
            owner,
            lease_until: time(lease),
            fence: fence.unwrap_or(1),
            accepted_at: time(accepted)
                .ok_or_else(|| invalid("a build row has no accepted_at".into()))?,
            dispatched_at: time(dispatched),
            updated_at: time(updated).unwrap_or_else(Utc::now),
        })
    }
}

/// A new claim: what the caller will dispatch, and for how long it holds the right to.
#[derive(Clone, Debug)]
pub struct NewClaim<'a> {
    pub request_id: &'a str,
    pub key: &'a str,
    pub driver_version: &'a str,
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease: Duration,
}

impl Store {
    /// Opens (and creates or migrates) the store. SQLite imports an old `ledger.jsonl` from the
    /// same directory once. PostgreSQL connects lazily: an unreachable server is an error of the
    /// first operation, so the service can start and report itself not ready.
    pub async fn open(spec: &StateSpec) -> Result<Self, StoreError> {
        match spec {
            StateSpec::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: "sqlite".into(),
                        source: Cause::of(e),
                    })??;
                let store = Self::Sqlite(store);
                if let Some(ledger) = store.ledger_to_import() {
                    import::import_ledger(&store, &ledger).await?;
                }
                Ok(store)
            }
            StateSpec::Postgres(url) => Ok(Self::Postgres(postgres::PgStore::open(url)?)),
        }
    }

    /// The SQLite store in `state_dir` (the default).
    pub async fn in_dir(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open(&StateSpec::Sqlite(state_dir.join(DB_FILE))).await
    }

    /// What the store is, for messages: a path, or a URL without its password.
    pub fn label(&self) -> String {
        match self {
            Self::Sqlite(s) => s.label(),
            Self::Postgres(p) => p.label(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    fn ledger_to_import(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite(s) => s.ledger_to_import(),
            Self::Postgres(_) => None,
        }
    }

    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<BuildRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.query(sql, params).await,
            Self::Postgres(p) => p.query(sql, params).await,
        }
    }

    async fn one(&self, sql: &str, params: Vec<Param>) -> Result<Option<BuildRecord>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.execute(sql, params).await,
            Self::Postgres(p) => p.execute(sql, params).await,
        }
    }

    /// Answers when the store can be read and written to; the error says why not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
            Self::Postgres(p) => p.ping().await,
        }
    }

    /// Claims (identity, driver version) for a dispatch, unless a build of it is open: one
    /// atomic insert against the unique index of open builds.
    pub async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, StoreError> {
        let insert = format!(
            "INSERT INTO builds ({COLUMNS}) VALUES ($1, $2, $3, 'claimed', NULL, NULL, NULL, $4, {DB_NOW} + $5, $6, NULL, $6, 1) \
             ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        );
        let select = format!(
            "SELECT {COLUMNS} FROM builds WHERE key = $1 AND driver_version = $2 AND {OPEN}"
        );
        let params = vec![
            text(claim.request_id),
            text(claim.key),
            text(claim.driver_version),
            text(claim.owner),
            millis_of(claim.lease),
            millis(claim.now),
        ];
        let lookup = vec![text(claim.key), text(claim.driver_version)];
        // The open build may settle between the insert and the read: then claim again.
        for _ in 0..5 {
            let found = match self {
                Self::Sqlite(s) => {
                    s.claim(&insert, params.clone(), &select, lookup.clone())
                        .await?
                }
                Self::Postgres(p) => {
                    p.claim(&insert, params.clone(), &select, lookup.clone())
                        .await?
                }
            };
            if let Some((won, row)) = found {
                let record = row.decode(&self.label())?;
                return Ok(if won {
                    Claim::Won(record)
                } else {
                    Claim::Held(record)
                });
            }
        }
        Err(StoreError::Unavailable {
            store: self.label(),
            source: Cause::from(format!(
                "cannot claim {} {}: the open build kept changing; retry",
                claim.key, claim.driver_version
            )),
        })
    }

    /// Takes over a claim whose lease ended `grace` ago or more (its holder stopped before it
    /// dispatched, or waited too long): the claim gets this owner, a new lease and a raised fence,
    /// so the old holder's renewal and writes change nothing from now on.
    pub async fn take_over(
        &self,
        build: &BuildRecord,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        grace: Duration,
    ) -> Result<Option<BuildRecord>, StoreError> {
        self.one(
            &format!(
                "UPDATE builds SET owner = $4, lease_until = {DB_NOW} + $5, updated_at = $6, fence = fence + 1 \
                 WHERE request_id = $1 AND key = $2 AND driver_version = $3 \
                 AND phase = 'claimed' AND fence = $7 AND (lease_until IS NULL OR lease_until < {DB_NOW} - $8) \
                 RETURNING {COLUMNS}"
            ),
            [
                BuildId::from(build).params(),
                vec![
                    text(owner),
                    millis_of(lease),
                    millis(now),
                    Param::Int(Some(build.fence)),
                    millis_of(grace),
                ],
            ]
            .concat(),
        )
        .await
    }

    /// Renews a claim for a full lease, right before each send of its dispatch: false when it is
    /// no longer `claim`'s (taken over, which raised its fence, or settled).
    pub async fn renew(
        &self,
        claim: &BuildRecord,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                &format!(
                    "UPDATE builds SET lease_until = {DB_NOW} + $5, updated_at = $6 \
                     WHERE request_id = $1 AND key = $2 AND driver_version = $3 \
                     AND phase = 'claimed' AND owner = $4 AND fence = $7"
                ),
                [
                    BuildId::from(claim).params(),
                    vec![
                        opt_text(claim.owner.as_deref()),
                        millis_of(lease),
                        millis(now),
                        Param::Int(Some(claim.fence)),
                    ],
                ]
                .concat(),
            )
            .await?;
        Ok(n > 0)
    }

    /// Records the run that builds a claimed identity, if the claim is still `claim`'s: false
    /// when it was taken over (the new holder adopts the run by its request id) or settled.
    pub async fn mark_dispatched(
        &self,
        claim: &BuildRecord,
        run_id: u64,
        url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE builds SET phase = 'dispatched', run_id = $4, url = $5, dispatched_at = $6, \
                 updated_at = $6, lease_until = NULL \
                 WHERE request_id = $1 AND key = $2 AND driver_version = $3 \
                 AND phase = 'claimed' AND owner = $7 AND fence = $8",
                [
                    BuildId::from(claim).params(),
                    vec![
                        Param::Int(Some(i64::try_from(run_id).unwrap_or(i64::MAX))),
                        opt_text(url),
                        millis(now),
                        opt_text(claim.owner.as_deref()),
                        Param::Int(Some(claim.fence)),
                    ],
                ]
                .concat(),
            )
            .await?;
        Ok(n > 0)
    }

    /// Gives up a claim its holder could not dispatch (`reason` says why), if it is still
    /// `claim`'s: a holder that lost it must not end the new holder's build.
    pub async fn abandon(
        &self,
        claim: &BuildRecord,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE builds SET phase = 'failed', conclusion = $4, updated_at = $5, lease_until = NULL \
                 WHERE request_id = $1 AND key = $2 AND driver_version = $3 \
                 AND phase = 'claimed' AND owner = $6 AND fence = $7",
                [
                    BuildId::from(claim).params(),
                    vec![
                        text(reason),
                        millis(now),
                        opt_text(claim.owner.as_deref()),
                        Param::Int(Some(claim.fence)),
                    ],
                ]
                .concat(),
            )
            .await?;
        Ok(n > 0)
    }

    /// Ends an open build; a later request starts a new one. False when it was already settled.
    pub async fn settle<'a>(
        &self,
        build: impl Into<BuildId<'a>>,
        phase: Phase,
        conclusion: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let build: BuildId<'_> = build.into();
        let n = self
            .execute(
                &format!(
                    "UPDATE builds SET phase = $4, conclusion = $5, updated_at = $6, lease_until = NULL \
                     WHERE request_id = $1 AND key = $2 AND driver_version = $3 AND {OPEN}"
                ),
                [
                    build.params(),
                    vec![
                        text(phase.as_str()),
                        opt_text(conclusion),
                        millis(now),
                    ],
                ]
                .concat(),
            )
            .await?;
        Ok(n > 0)
    }

    /// The open build of (identity, driver version), if any.
    pub async fn open_build(
        &self,
        key: &str,
        driver_version: &str,
    ) -> Result<Option<BuildRecord>, StoreError> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM builds WHERE key = $1 AND driver_version = $2 AND {OPEN}"
            ),
            vec![text(key), text(driver_version)],
        )
        .await
    }

    /// Every open build (for build states and the service's sweep).
    pub async fn open_builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM builds WHERE {OPEN} ORDER BY accepted_at"),
            Vec::new(),
        )
        .await
    }

    /// The builds a request id names (one, or a batch run's identities), newest first.
    pub async fn by_request_id(&self, request_id: &str) -> Result<Vec<BuildRecord>, StoreError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM builds WHERE request_id = $1 ORDER BY updated_at DESC"),
            vec![text(request_id)],
        )
        .await
    }

    /// Every build of one identity and driver version, oldest first.
    pub async fn history(
        &self,
        key: &str,
        driver_version: &str,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM builds WHERE key = $1 AND driver_version = $2 ORDER BY accepted_at"
            ),
            vec![text(key), text(driver_version)],
        )
        .await
    }

    /// Deletes settled builds last changed before `before`; returns how many.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.execute(
            &format!("DELETE FROM builds WHERE NOT ({OPEN}) AND updated_at < $1"),
            vec![millis(before)],
        )
        .await
    }

    /// Writes a whole record as it is (imports, tests of crash recovery).
    pub async fn insert(&self, r: &BuildRecord) -> Result<bool, StoreError> {
        let n = self
            .execute(
                &format!(
                    "INSERT INTO builds ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT DO NOTHING"
                ),
                vec![
                    text(&r.request_id),
                    text(&r.key),
                    text(&r.driver_version),
                    text(r.phase.as_str()),
                    Param::Int(r.run_id.map(|id| i64::try_from(id).unwrap_or(i64::MAX))),
                    opt_text(r.url.as_deref()),
                    opt_text(r.conclusion.as_deref()),
                    opt_text(r.owner.as_deref()),
                    Param::Int(r.lease_until.map(|t| t.timestamp_millis())),
                    millis(r.accepted_at),
                    Param::Int(r.dispatched_at.map(|t| t.timestamp_millis())),
                    millis(r.updated_at),
                    Param::Int(Some(r.fence)),
                ],
            )
            .await?;
        Ok(n > 0)
    }
}

/// A name for this process as a claim holder: host, process id and a random part, so two
/// processes (or a restarted one) never share it.
pub fn owner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let random = crate::fsio::random_hex(4)
        .unwrap_or_else(|_| format!("{:08x}", Utc::now().timestamp_subsec_nanos()));
    format!("{host}/{}/{random}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let dir = Path::new("/var/lib/kfleet");
        assert_eq!(
            StateSpec::parse("", dir).unwrap(),
            StateSpec::Sqlite(dir.join(DB_FILE))
        );
        assert_eq!(
            StateSpec::parse("sqlite:/tmp/x.db", dir).unwrap(),
            StateSpec::Sqlite("/tmp/x.db".into())
        );
        let err = StateSpec::parse("mysql://u:pw@h/db", dir).unwrap_err();
        assert!(err.contains("mysql://…") && !err.contains("pw"), "{err}");
    }
}
