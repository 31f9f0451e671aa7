//! Web Push: readers who opted in get a browser notification for every alert they care about,
//! through their browser's push service (FCM, Mozilla autopush, Apple, Windows).
//!
//! - [`subscription`]: validates what browsers hand us (endpoint allowlist, key shapes);
//! - [`vapid`]: the installation's key pair and cached signed tokens (RFC 8292);
//! - [`ece`]: message encryption (RFC 8291, aes128gcm);
//! - [`encryptor`]: the threads the fan-out's encryption runs on;
//! - [`payload`]: the notification JSON, ≤ 2 KiB, Declarative Web Push compatible;
//! - [`receipt`]: the per-push tokens that tie shown/clicked receipts to a sent push;
//! - [`sender`]: SSRF-safe sending: per push-service queues and workers that each drive one
//!   connection, per-origin limits and pauses, answer classes;
//! - [`fanout`]: the durable, multi-process fan-out;
//! - [`store`]: subscriptions, jobs, batches, the delivery log and figures.

pub mod ece;
pub(crate) mod encryptor;
pub(crate) mod fanout;
pub mod payload;
pub(crate) mod receipt;
pub(crate) mod sender;
pub mod store;
pub mod subscription;
pub mod vapid;

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;

use crate::config::Settings;

/// Push settings, derived once from [`Settings`].
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub workers: usize,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub max_attempts: u32,
    pub lease: Duration,
    /// Signs each push's receipt token.
    pub receipts: receipt::ReceiptKey,
    /// The longest one try can take (connect and exchange): retry claims outlive it.
    pub try_time: Duration,
    pub deactivation: store::Deactivation,
    /// PushOutcome flushes at once per process (a quarter of the database pool).
    pub flush_slots: usize,
}

/// Everything push needs at run time; absent when `vapid_subject` is not set.
pub struct Push {
    pub vapid: Arc<vapid::Vapid>,
    pub sender: Arc<sender::Sender>,
    pub fanout: Arc<fanout::Fanout>,
    pub allow: subscription::Allowlist,
    /// Verifies the receipt tokens of shown/clicked receipts.
    pub receipts: receipt::ReceiptKey,
}

impl Push {
    pub async fn build(settings: &Settings, pool: &PgPool) -> anyhow::Result<Option<Self>> {
        let Some(subject) = settings.vapid_subject.as_deref() else {
            tracing::warn!(
                "Web Push is off: set `vapid_subject` (mailto: or https: contact) to send browser notifications"
            );
            return Ok(None);
        };
        let vapid = Arc::new(
            vapid::Vapid::load(pool, settings.vapid_private_key.as_ref(), subject, settings.vapid_rotate)
                .await?,
        );
        let receipts = receipt::ReceiptKey::load(pool).await?;
        let allow =
            subscription::Allowlist::new(&settings.push_extra_hosts, settings.push_extra_hosts_allow_http);
        let sender = Arc::new(sender::Sender::new(
            sender::SenderSettings {
                connect_timeout: Duration::from_secs(settings.push_connect_timeout_secs),
                timeout: Duration::from_secs(settings.push_timeout_secs),
                per_origin: settings.push_concurrency_per_origin,
                http2_connections: settings.push_http2_connections,
                allow: allow.clone(),
                extra_roots: match &settings.push_ca_file {
                    Some(path) => extra_roots(path)?,
                    None => Vec::new(),
                },
            },
            vapid.clone(),
        )?);
        let fanout = fanout::Fanout::new(
            pool.clone(),
            sender.clone(),
            PushSettings {
                workers: settings.push_workers,
                batch_size: settings.push_batch_size,
                max_in_flight: settings.push_max_in_flight,
                max_attempts: settings.push_max_attempts,
                lease: Duration::from_secs(settings.push_lease_secs),
                receipts: receipts.clone(),
                try_time: Duration::from_secs(
                    settings.push_connect_timeout_secs + settings.push_timeout_secs,
                ),
                flush_slots: (settings.db_pool_size as usize / 4).max(1),
                deactivation: store::Deactivation {
                    alerts: settings.push_deactivate_after_alerts as i32,
                    after: Duration::from_secs(settings.push_deactivate_after_hours as u64 * 3600),
                },
            },
        )?;
        Ok(Some(Self { vapid, sender, fanout, allow, receipts }))
    }
}

/// The certificates of `push_ca_file`.
fn extra_roots(
    path: &std::path::Path,
) -> anyhow::Result<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("push_ca_file: cannot read {}: {e}", path.display()))?;
    let roots = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        anyhow::anyhow!("push_ca_file: {} is not a PEM certificate bundle: {e}", path.display())
    })?;
    if roots.is_empty() {
        anyhow::bail!("push_ca_file: {} holds no certificate", path.display());
    }
    Ok(roots)
}
