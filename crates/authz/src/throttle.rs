//! Sign-in throttling: failed sign-ins are counted per account and per source address in the store, so
//! every replica sees the same counts, and past a few free attempts each further one waits a delay that
//! doubles with every failure, up to a cap. A fresh `/authorize` starts a new flow but not a new count.
//!
//! A count is read before the password is checked and written after, so the attempts being checked at
//! the same moment are bounded too: one per account and [`CHECKS_PER_ADDRESS`] per source address on each
//! replica; a further one waits its turn for up to [`CHECK_WAIT`] (two sign-ins to one account at once,
//! say a shared account, both go through), then is answered as throttled. Otherwise a burst of
//! concurrent attempts would all read the count before the first failure was written.
//!
//! The account is counted by what was typed, whether or not such an account exists, and the answer is the
//! same either way, so throttling never tells which accounts exist. What was typed is stored only as a
//! SHA-256 (people type passwords into the username field). IPv6 sources are counted per /64, the block
//! one host can trivially spread over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use portcullis_store::Failures;

use super::gateway::{Gateway, GatewayError, hash};

/// Failures are counted in windows of this long, opened by the first failure.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Failures one account may have in a window before each further attempt waits.
pub const FREE_PER_ACCOUNT: u32 = 5;
/// Failures one source address may have in a window (across accounts) before each further attempt
/// waits.
pub const FREE_PER_ADDRESS: u32 = 20;
/// The first wait; it doubles with each further failure.
pub const FIRST_DELAY_SECS: i64 = 30;
/// The longest wait.
pub const MAX_DELAY_SECS: i64 = WINDOW_SECS;

/// Sign-ins from one source address whose passwords may be checked at the same moment (people behind
/// one NAT sign in at once).
pub const CHECKS_PER_ADDRESS: u32 = 4;

/// How long a sign-in waits for its turn to be checked; then it is answered as throttled.
pub const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The sign-ins being checked now, by account and by source address.
#[derive(Debug, Default)]
pub(crate) struct Checking(Mutex<HashMap<String, u32>>);

/// One sign-in's place among those being checked, given back when dropped.
pub(crate) struct Claim<'a> {
    checking: &'a Checking,
    keys: Vec<String>,
}

impl Checking {
    /// A place for a sign-in of `username` from `from`; `None` when the account already has one being
    /// checked, or the address [`CHECKS_PER_ADDRESS`].
    pub(crate) fn claim(&self, username: &str, from: Option<IpAddr>) -> Option<Claim<'_>> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let account = account_key(username);
        let address = from.map(address_key);
        if counts.contains_key(&account) || address.as_ref().is_some_and(|a| counts.get(a) >= Some(&CHECKS_PER_ADDRESS))
        {
            return None;
        }
        let keys: Vec<String> = std::iter::once(account).chain(address).collect();
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        Some(Claim { checking: self, keys })
    }

    /// [`claim`](Self::claim), waiting up to [`CHECK_WAIT`] for a place.
    pub(crate) async fn claim_in_turn(&self, username: &str, from: Option<IpAddr>) -> Option<Claim<'_>> {
        let give_up = tokio::time::Instant::now() + CHECK_WAIT;
        loop {
            if let Some(claim) = self.claim(username, from) {
                return Some(claim);
            }
            if tokio::time::Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut counts = self.checking.0.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            if let Some(n) = counts.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

/// Seconds to wait before the next attempt after `failures`, given `free` attempts; `None` when an
/// attempt may be made now.
pub fn wait(failures: Option<Failures>, free: u32, now: i64) -> Option<i64> {
    let f = failures?;
    let over = f.count.checked_sub(free)?;
    let delay = FIRST_DELAY_SECS.checked_shl(over).filter(|d| *d <= MAX_DELAY_SECS).unwrap_or(MAX_DELAY_SECS);
    let until = f.last_at.saturating_add(delay);
    (until > now).then_some(until - now)
}

fn account_key(username: &str) -> String {
    format!("account:{}", hash(&username.to_lowercase()))
}

fn address_key(ip: IpAddr) -> String {
    match portcullis_types::source_block(ip) {
        IpAddr::V4(v4) => format!("address:{v4}"),
        IpAddr::V6(v6) => format!("address:{v6}/64"),
    }
}

impl Gateway {
    /// How long the next sign-in for `username` from `from` must wait; `None` when it may go ahead.
    pub(crate) async fn sign_in_wait(&self, username: &str, from: Option<IpAddr>) -> Result<Option<i64>, GatewayError> {
        let now = self.now();
        let account = wait(self.store.failures(&account_key(username), now).await?, FREE_PER_ACCOUNT, now);
        let address = match from {
            Some(ip) => wait(self.store.failures(&address_key(ip), now).await?, FREE_PER_ADDRESS, now),
            None => None,
        };
        Ok(account.max(address))
    }

    /// Counts a failed sign-in; returns how long the next attempt must wait.
    pub(crate) async fn sign_in_failed(
        &self,
        username: &str,
        from: Option<IpAddr>,
    ) -> Result<Option<i64>, GatewayError> {
        let now = self.now();
        let f = self.store.record_failure(&account_key(username), now, WINDOW_SECS).await?;
        let mut next = wait(Some(f), FREE_PER_ACCOUNT, now);
        if let Some(ip) = from {
            let f = self.store.record_failure(&address_key(ip), now, WINDOW_SECS).await?;
            next = next.max(wait(Some(f), FREE_PER_ADDRESS, now));
        }
        Ok(next)
    }

    /// A successful sign-in forgets the account's failures (not the address's: one good account must
    /// not reset an address that is guessing others).
    pub(crate) async fn sign_in_succeeded(&self, username: &str) -> Result<(), GatewayError> {
        Ok(self.store.clear_failures(&account_key(username)).await?)
    }
}

/// A wait in words for the sign-in page.
pub fn in_words(secs: i64) -> String {
    match secs {
        ..=1 => "1 second".to_owned(),
        2..=90 => format!("{secs} seconds"),
        _ => format!("{} minutes", (secs + 59) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(count: u32, last_at: i64) -> Option<Failures> {
        Some(Failures { count, last_at, window_ends: last_at + WINDOW_SECS })
    }

    #[test]
    fn free_attempts_then_a_doubling_wait_up_to_the_cap() {
        assert_eq!(wait(None, 5, 100), None);
        assert_eq!(wait(failures(4, 100), 5, 100), None);
        assert_eq!(wait(failures(5, 100), 5, 100), Some(30));
        assert_eq!(wait(failures(6, 100), 5, 100), Some(60));
        assert_eq!(wait(failures(7, 100), 5, 110), Some(110));
        assert_eq!(wait(failures(40, 100), 5, 100), Some(MAX_DELAY_SECS));
        assert_eq!(wait(failures(5, 100), 5, 130), None, "the wait is over");
    }

    #[test]
    fn one_check_per_account_and_a_few_per_address_at_a_time() {
        let checking = Checking::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let alice = checking.claim("alice", Some(ip)).expect("the first");
        assert!(checking.claim("Alice", None).is_none(), "the account is being checked");
        let others: Vec<_> =
            (1..CHECKS_PER_ADDRESS).map(|n| checking.claim(&format!("user{n}"), Some(ip)).unwrap()).collect();
        assert!(checking.claim("bob", Some(ip)).is_none(), "the address has its share");
        assert!(checking.claim("bob", Some("192.0.2.8".parse().unwrap())).is_some(), "another address");
        drop(alice);
        assert!(checking.claim("alice", Some(ip)).is_some(), "given back");
        drop(others);
        assert!(checking.0.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[test]
    fn keys_count_accounts_by_what_was_typed_and_ipv6_per_64() {
        assert_eq!(account_key("Alice"), account_key("alice"));
        assert!(!account_key("alice").contains("alice"));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), "address:192.0.2.7");
        assert_eq!(in_words(30), "30 seconds");
        assert_eq!(in_words(600), "10 minutes");
    }
}
