//! Rate limits of the public push API, per client network and per kind of request.
//!
//! A client is keyed by its IPv4 address, or by the /64 of its IPv6 address: a household, a
//! phone or a server is handed a whole /64, so keying by /128 gave one /64 unlimited quota.
//! IPv4-mapped IPv6 addresses count as the IPv4 address. The key is the connection caps' own
//! [`AddressKey`]: one definition of "one client" for the whole service.
//!
//! Three budgets, so that what every page load does never starves what a reader does rarely:
//! - `subscribe` (`public_subscribe_rate_per_minute`): `POST /push/subscriptions`, which every
//!   page load of a subscribed reader sends to keep its subscription fresh;
//! - `receipts` (`public_receipt_rate_per_minute`): `POST /push/receipts`, one or two per push;
//! - `general` (`public_rate_per_minute`): everything else (the live alerts, the key,
//!   unsubscribing), and also every subscription that is *new*: creating subscriptions stays as
//!   slow for a stranger as before, refreshing them costs only the subscribe budget.
//!
//! Memory: governor keeps one small entry per key and budget. [`PublicLimits::retain_recent`]
//! drops the entries of clients whose budget is full again (idle for a minute at most); the
//! workers call it every [`SWEEP_EVERY`].

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::error::ApiError;
pub use super::limits::AddressKey;
use crate::config::Settings;

/// How often idle limiter entries are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What one client is limited as: its IPv4 address, or its IPv6 /64.
pub fn client_key(ip: IpAddr) -> AddressKey {
    AddressKey::of(ip)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    General,
    Subscribe,
    Receipts,
}

impl Budget {
    fn what(self) -> &'static str {
        match self {
            Self::General => "requests to the public push API",
            Self::Subscribe => "subscription refreshes",
            Self::Receipts => "receipts",
        }
    }
}

struct Limiter {
    per_minute: u32,
    limiter: DefaultKeyedRateLimiter<AddressKey>,
}

impl Limiter {
    fn new(per_minute: u32) -> Self {
        // A burst of a whole minute's budget: the page loads of a newsroom behind one address
        // come in clumps (an alert, a push, everyone clicks).
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self { per_minute, limiter: RateLimiter::keyed(Quota::per_minute(rate)) }
    }
}

/// The public API's limiters; see the module documentation.
pub struct PublicLimits {
    general: Limiter,
    subscribe: Limiter,
    receipts: Limiter,
}

impl PublicLimits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            general: Limiter::new(settings.public_rate_per_minute),
            subscribe: Limiter::new(settings.public_subscribe_rate_per_minute),
            receipts: Limiter::new(settings.public_receipt_rate_per_minute),
        }
    }

    fn limiter(&self, budget: Budget) -> &Limiter {
        match budget {
            Budget::General => &self.general,
            Budget::Subscribe => &self.subscribe,
            Budget::Receipts => &self.receipts,
        }
    }

    /// Takes one request from `client`'s budget (`client` as [`client_key`] makes it), or
    /// answers 429 with `Retry-After`.
    pub fn check(&self, budget: Budget, client: AddressKey) -> Result<(), ApiError> {
        let l = self.limiter(budget);
        l.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
                detail: format!(
                    "at most {} {} a minute from one address (IPv6: one /64)",
                    l.per_minute,
                    budget.what()
                ),
            }
        })
    }

    /// Forgets clients whose budget is full again, so memory follows the clients of the last
    /// minute or so, not every client ever seen.
    pub fn retain_recent(&self) {
        for l in [&self.general, &self.subscribe, &self.receipts] {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }

    /// Entries held, over all budgets.
    pub fn len(&self) -> usize {
        [&self.general, &self.subscribe, &self.receipts].iter().map(|l| l.limiter.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_ipv4_by_address() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
    }

    #[test]
    fn budgets_are_separate_and_idle_clients_are_forgotten() {
        let settings = Settings {
            public_rate_per_minute: 2,
            public_subscribe_rate_per_minute: 3,
            public_receipt_rate_per_minute: 1,
            ..Settings::default()
        };
        let limits = PublicLimits::new(&settings);
        let me = client_key("2001:db8::1".parse().unwrap());
        for _ in 0..3 {
            limits.check(Budget::Subscribe, me).unwrap();
        }
        assert!(limits.check(Budget::Subscribe, me).is_err());
        limits.check(Budget::General, me).unwrap();
        limits.check(Budget::Receipts, me).unwrap();
        assert!(limits.check(Budget::Receipts, me).is_err());
        assert_eq!(limits.len(), 3);
        // Many clients, each seen once and long ago as far as a full budget is concerned.
        // 60,000 a minute: one request is refilled within a millisecond or two.
        let fresh = PublicLimits::new(&Settings { public_rate_per_minute: 60_000, ..Settings::default() });
        for i in 0..10_000u32 {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
            fresh.check(Budget::General, client_key(ip.into())).unwrap();
        }
        assert_eq!(fresh.len(), 10_000);
        // Entries are dropped once their budget has refilled, which for this rate takes a
        // moment rather than a minute.
        std::thread::sleep(Duration::from_millis(100));
        fresh.retain_recent();
        assert_eq!(fresh.len(), 0, "a client's entry goes once its budget is full again");
    }
}
