//! How many connections the main port holds: in total, and per client address.
//!
//! The total is a semaphore taken *before* `accept`: at the cap, accepting pauses (new clients
//! wait in the kernel's backlog) until a connection closes, so the process never runs into its
//! open-file limit, where `accept` itself fails and every other file (a database connection, a
//! push service's socket) with it. The cap is checked at start-up against `RLIMIT_NOFILE`.
//!
//! The per-address count is taken after `accept` and refuses the excess at once (see
//! `server::refuse`): one address must not be able to take the whole total. IPv4 clients are
//! counted by address, IPv6 clients by /64, the block one subscriber usually gets.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::Settings, telemetry::metrics};

/// Files a process needs besides its HTTP connections and the database pool: listeners, the
/// LISTEN connection, the runtime's epoll and wakers, DNS lookups, log output, scrapes of
/// `metrics_bind`, the private PostgreSQL's pipes.
const FILE_RESERVE: u64 = 256;

/// Fewest HTTP connections a process may be left with: below this the open-file limit is a
/// mistake to be fixed (e.g. systemd's `LimitNOFILE=`), not a setting to run with.
const MIN_CONNECTIONS: u64 = 64;

/// At most one log line per this interval about the process being at its cap.
const PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The key one client's connections are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

pub struct ConnectionLimits {
    /// `main` or `metrics`: the metrics' label.
    port: &'static str,
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_address: usize,
    held: Mutex<HashMap<AddressKey, usize>>,
    /// When accepting last paused, so that a client keeping the process at its cap does not
    /// flood the log (the metric counts every pause).
    last_pause_logged: Mutex<Option<Instant>>,
}

/// One accepted connection's place in both counts; dropping it frees both. It travels with the
/// socket (`server::EdgeIo`), so an upgraded WebSocket keeps it until the socket closes.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    key: AddressKey,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().expect("connection limits lock");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
        metrics::http_connection_closed(self.limits.port);
    }
}

impl ConnectionLimits {
    pub fn new(port: &'static str, max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            port,
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            max_per_address,
            held: Mutex::new(HashMap::new()),
            last_pause_logged: Mutex::new(None),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A place in the total, waiting for one to free up if the process is full.
    pub async fn reserve(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.total.clone().try_acquire_owned() {
            return permit;
        }
        metrics::http_accept_paused(self.port);
        {
            let mut last = self.last_pause_logged.lock().expect("pause log lock");
            if last.is_none_or(|at| at.elapsed() >= PAUSE_LOG_INTERVAL) {
                *last = Some(Instant::now());
                tracing::warn!(
                    port = self.port,
                    max = self.max_total,
                    "connection cap reached: accepting paused until one closes"
                );
            }
        }
        self.total.clone().acquire_owned().await.expect("the connection semaphore is never closed")
    }

    /// Counts an accepted connection against its address; over the cap, the permit comes back so
    /// that the caller can refuse the connection while it still counts in the total.
    pub fn admit(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        ip: IpAddr,
    ) -> Result<ConnectionSlot, OwnedSemaphorePermit> {
        let key = AddressKey::of(ip);
        let mut held = self.held.lock().expect("connection limits lock");
        let n = held.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            drop(held);
            metrics::http_connection_refused(self.port, "per_address");
            return Err(permit);
        }
        *n += 1;
        metrics::http_connection_opened(self.port);
        Ok(ConnectionSlot { _permit: permit, limits: self.clone(), key })
    }
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does at start: the soft
/// limit is often 1024 for compatibility with `select`, which nothing here uses) and returns it.
pub fn open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    }
}

/// Files kept back from HTTP connections: the database pool, push connections (one per push
/// in flight, when Web Push is on) and [`FILE_RESERVE`].
pub fn file_reserve(settings: &Settings) -> u64 {
    let push = if settings.vapid_subject.is_some() { settings.push_max_in_flight as u64 } else { 0 };
    settings.db_pool_size as u64 + push + FILE_RESERVE
}

/// The process-wide connection cap: `max_tcp_connections`, or when 0 everything the open-file
/// limit leaves after the reserve. A setting at or above that is refused, naming it.
pub fn total_cap(settings: &Settings, open_files: u64) -> Result<usize, String> {
    let reserve = file_reserve(settings);
    let available = open_files.saturating_sub(reserve);
    if settings.max_tcp_connections == 0 {
        if available < MIN_CONNECTIONS {
            return Err(format!(
                "invalid setting `max_tcp_connections`: the open-file limit ({open_files}) leaves only \
                 {available} connections after a reserve of {reserve} for the database pool, push \
                 connections and files; raise it (systemd: LimitNOFILE=, shell: ulimit -n)"
            ));
        }
        // RLIM_INFINITY is u64::MAX: a semaphore holds at most usize::MAX >> 3 permits.
        return Ok(available.min(Semaphore::MAX_PERMITS as u64) as usize);
    }
    let wanted = settings.max_tcp_connections as u64;
    if wanted >= available {
        return Err(format!(
            "invalid setting `max_tcp_connections`: {wanted} is not below the open-file limit \
             ({open_files}) minus a reserve of {reserve} for the database pool, push connections and \
             files; set at most {} (or 0 to derive it), or raise the limit (systemd: LimitNOFILE=)",
            available.saturating_sub(1)
        ));
    }
    Ok(wanted as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = AddressKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = AddressKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = AddressKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            AddressKey::of("::ffff:192.0.2.7".parse().unwrap()),
            AddressKey::of("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        let settings = Settings { db_pool_size: 16, ..Settings::default() };
        assert_eq!(total_cap(&settings, 20_000), Ok(20_000 - 16 - FILE_RESERVE as usize));
        let push = Settings { vapid_subject: Some("mailto:a@example.com".into()), ..settings.clone() };
        assert_eq!(total_cap(&push, 20_000), Ok(20_000 - 16 - 1000 - FILE_RESERVE as usize));
        let too_many = Settings { max_tcp_connections: 19_800, ..settings.clone() };
        let e = total_cap(&too_many, 20_000).unwrap_err();
        assert!(e.contains("max_tcp_connections") && e.contains("19727"), "{e}");
        let fits = Settings { max_tcp_connections: 19_000, ..settings.clone() };
        assert_eq!(total_cap(&fits, 20_000), Ok(19_000));
        assert!(total_cap(&settings, 300).unwrap_err().contains("LimitNOFILE"));
        assert!(total_cap(&settings, u64::MAX).is_ok());
    }
}
