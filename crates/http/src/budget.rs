//! Failed token verifications per source address (an IPv6 /64 counting as one). A token seen before
//! costs a hash and a look-up (the verifier caches outcomes), but a new one costs a signature check, and
//! a flood of new forged tokens would take the CPU from every other caller. Each address may present `per_minute` tokens that fail
//! (a minute's worth at once, refilled evenly); past that, its tokens are refused with 429 unless the
//! verifier already knows them, so its own valid tokens keep working. Memory is bounded: at most
//! [`ADDRESSES`] addresses are tracked, each forgotten a minute after its last failure.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses tracked at most (about 100 bytes each).
const ADDRESSES: u64 = 100_000;

/// One address's allowance.
#[derive(Debug)]
struct Bucket {
    /// Failures it may still have.
    left: f64,
    /// When `left` was last brought up to date.
    at: Instant,
}

/// The allowances of every address that failed recently.
pub(crate) struct FailureBudget {
    per_minute: f64,
    buckets: moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for FailureBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureBudget").field("per_minute", &self.per_minute).finish_non_exhaustive()
    }
}

impl FailureBudget {
    /// `None` when `per_minute` is 0 (no limit).
    pub(crate) fn new(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            per_minute: f64::from(per_minute),
            buckets: moka::sync::Cache::builder()
                .max_capacity(ADDRESSES)
                .time_to_idle(Duration::from_secs(60))
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    /// `left` brought up to `now`.
    fn refill(&self, b: &mut Bucket, now: Instant) {
        let earned = now.saturating_duration_since(b.at).as_secs_f64() * self.per_minute / 60.0;
        b.left = (b.left + earned).min(self.per_minute);
        b.at = now;
    }

    /// Sets one failure aside for a token from `ip` about to be checked: `false` when the address has
    /// spent its allowance. Taken before the check, not counted after it, so that the checks an address
    /// has in flight at once count against it too (a burst of concurrent new tokens would otherwise
    /// all pass before the first failure is counted).
    pub(crate) fn take(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = portcullis_types::source_block(ip);
        let bucket = self.buckets.get_with(ip, || Arc::new(Mutex::new(Bucket { left: self.per_minute, at: now })));
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, now);
        if b.left < 1.0 {
            return false;
        }
        b.left -= 1.0;
        true
    }

    /// Gives back what [`take`](Self::take) set aside, for a token that passed.
    pub(crate) fn refund(&self, ip: IpAddr, now: Instant) {
        let Some(bucket) = self.buckets.get(&portcullis_types::source_block(ip)) else { return };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut b, now);
        b.left = (b.left + 1.0).min(self.per_minute);
    }

    /// Whole seconds until a spent address may fail once more.
    pub(crate) fn retry_after(&self) -> u64 {
        (60.0 / self.per_minute).ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_spends_its_minute_then_earns_it_back_and_others_are_untouched() {
        let budget = FailureBudget::new(6).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for n in 0..6 {
            assert!(budget.take(a, t0), "check {n}");
        }
        assert!(!budget.take(a, t0), "six checks spend a budget of six a minute");
        assert!(budget.take(b, t0), "another address is not affected");
        // One failure is earned back every ten seconds, never more than a minute's worth.
        assert!(!budget.take(a, t0 + Duration::from_secs(9)));
        assert!(budget.take(a, t0 + Duration::from_secs(10)));
        assert!(!budget.take(a, t0 + Duration::from_secs(10)));
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..6 {
            assert!(budget.take(a, later));
        }
        assert!(!budget.take(a, later));
        assert_eq!(budget.retry_after(), 10);
        assert!(FailureBudget::new(0).is_none());
    }

    #[test]
    fn a_token_that_passes_gives_back_what_its_check_took() {
        let budget = FailureBudget::new(2).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(budget.take(a, t0));
            budget.refund(a, t0);
        }
        assert!(budget.take(a, t0) && budget.take(a, t0));
        assert!(!budget.take(a, t0), "two checks in flight at once spend it");
        budget.refund(a, t0);
        budget.refund(a, t0);
        budget.refund(a, t0);
        assert!(budget.take(a, t0) && budget.take(a, t0) && !budget.take(a, t0), "never more than the allowance");
    }

    #[test]
    fn an_ipv6_network_spends_one_allowance_whichever_of_its_addresses_it_fails_from() {
        let budget = FailureBudget::new(3).unwrap();
        let t0 = Instant::now();
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
            assert!(budget.take(host.parse().unwrap(), t0));
        }
        assert!(!budget.take("2001:db8:1:2:abcd::9".parse().unwrap(), t0), "a fresh address in the same /64");
        assert!(budget.take("2001:db8:1:3::1".parse().unwrap(), t0), "the next /64 is another source");
    }
}
