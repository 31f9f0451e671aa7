//! The leases of the batches this process holds, renewed together.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::push::store::{self, Batch};

/// The batches this process holds, all renewed together by one task in one statement, on a
/// connection of its own. (A renewal per batch competed with the outcome writers for connections,
/// and a renewal that waited for the pool behind the fan-out's own work let leases run out while
/// their batches were still being sent: another worker took them over and sent them again.)
#[derive(Default)]
pub(super) struct Leases {
    pub(super) held: Mutex<HashMap<store::BatchKey, usize>>,
}

/// A batch's place in [`Leases`]; dropping it stops the renewals.
pub(super) struct LeaseHold {
    pub(super) leases: Arc<Leases>,
    pub(super) key: store::BatchKey,
}

impl Leases {
    pub(super) fn hold(self: &Arc<Self>, batch: &Batch) -> LeaseHold {
        let key = (batch.job.alert_id, batch.job.step, batch.first_id);
        *self.held.lock().expect("leases lock").entry(key).or_default() += 1;
        LeaseHold { leases: self.clone(), key }
    }

    pub(super) fn held(&self) -> Vec<store::BatchKey> {
        self.held.lock().expect("leases lock").keys().copied().collect()
    }

    pub(super) async fn renew(self: Arc<Self>, pool: PgPool, lease: Duration, shutdown: CancellationToken) {
        let every_third = lease / 3;
        let mut every = tokio::time::interval(every_third);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Opened when there is something to renew and closed when there is not: an idle
        // process keeps no extra connection.
        let mut own: Option<PgConnection> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let held = self.held();
            if held.is_empty() {
                own = None;
                continue;
            }
            if own.is_none() {
                let options = (*pool.connect_options()).clone().application_name(crate::db::app_name::LEASE);
                match tokio::time::timeout(every_third, options.connect()).await {
                    Ok(Ok(c)) => own = Some(c),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not connect to renew push batch leases"),
                    Err(_) => tracing::warn!("connecting to renew push batch leases timed out"),
                }
            }
            let Some(conn) = own.as_mut() else { continue };
            // Bounded, so that a renewal stuck on a dead connection gives way to a new one
            // before the leases run out.
            match tokio::time::timeout(every_third, store::renew_leases(conn, &held, lease)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not renew push batch leases");
                    own = None;
                }
                Err(_) => {
                    tracing::warn!("renewing push batch leases timed out");
                    own = None;
                }
            }
        }
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().expect("leases lock");
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}
