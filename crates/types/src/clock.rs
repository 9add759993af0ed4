//! Time as a dependency: production code reads a [`SystemClock`]; tests drive a [`ManualClock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in whole seconds since the Unix epoch, the unit JWT claims use (RFC 7519 §2).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn now_unix(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `now` seconds since the epoch.
    pub fn at(now: u64) -> Self {
        Self { now: Arc::new(AtomicU64::new(now)) }
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: u64) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the clock to `now` seconds since the epoch.
    pub fn set(&self, now: u64) {
        self.now.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A moment in UTC, split for printing: year, month (1–12), day, hour, minute, second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl Utc {
    /// `unix` seconds since the epoch (negative ones too) as a civil date and time.
    pub fn from_unix(unix: i64) -> Self {
        let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self { year, month, day, hour: secs / 3600, minute: secs % 3600 / 60, second: secs % 60 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let at = |y, mo, d, h, mi, s| Utc { year: y, month: mo, day: d, hour: h, minute: mi, second: s };
        assert_eq!(Utc::from_unix(0), at(1970, 1, 1, 0, 0, 0));
        assert_eq!(Utc::from_unix(951_782_400), at(2000, 2, 29, 0, 0, 0));
        assert_eq!(Utc::from_unix(1_796_031_731), at(2026, 11, 30, 9, 42, 11));
        assert_eq!(Utc::from_unix(-1), at(1969, 12, 31, 23, 59, 59));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        let shared = clock.clone();
        assert_eq!(shared.now_unix(), 1_000);
        clock.advance(5);
        assert_eq!(shared.now_unix(), 1_005);
        clock.set(7);
        assert_eq!(shared.now_unix(), 7);
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now_unix() > 1_704_067_200);
    }
}
