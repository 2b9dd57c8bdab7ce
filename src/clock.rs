//! The time kfleet reads: the system's, or in tests a manual clock that moves only when told, so
//! simulated builds finish, caches expire and deadlines pass without sleeping. The sandbox, the
//! planner, the build service and the dashboard read one clock each, handed to them.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time: run timestamps, build records, deadlines.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time: caches, rate limits, simulated run progress.
    fn instant(&self) -> Instant;
}

/// A clock as the parts of kfleet hold it; the default is the system's.
#[derive(Clone, Debug)]
pub struct SharedClock(Arc<dyn Clock>);

impl Default for SharedClock {
    fn default() -> Self {
        Self(Arc::new(SystemClock))
    }
}

impl SharedClock {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self(clock)
    }
    pub fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
    pub fn instant(&self) -> Instant {
        self.0.instant()
    }
}

impl From<Arc<ManualClock>> for SharedClock {
    fn from(clock: Arc<ManualClock>) -> Self {
        Self(clock)
    }
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that starts at the time it was made and moves only by [`ManualClock::advance`].
#[derive(Debug)]
pub struct ManualClock {
    wall: DateTime<Utc>,
    mono: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            wall: Utc::now(),
            mono: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.wall + chrono::Duration::from_std(self.offset()).unwrap_or(chrono::Duration::MAX)
    }
    fn instant(&self) -> Instant {
        self.mono + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let (wall, mono) = (clock.now(), clock.instant());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.now(), clock.instant()), (wall, mono));
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now() - wall, chrono::Duration::seconds(90));
        assert_eq!(clock.instant() - mono, Duration::from_secs(90));
    }
}
