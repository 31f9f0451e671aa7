//! `push seed`: bulk-inserts subscriptions whose endpoints point at a sink, straight into the
//! server's database (found from its settings, as `sondakika token` finds it).

use std::time::Instant;

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use clap::Args;
use sondakika::{
    config::Settings,
    db::{self, Database},
};

use super::crypto::subscriber_keys;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Subscriptions to insert.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Port of the sink on localhost: endpoints are `http://localhost:PORT/push/<run>/<n>`.
    #[arg(long)]
    sink_port: u16,
    /// Endpoints use https (the sink's --tls-bind port).
    #[arg(long)]
    tls: bool,
    /// Distinct subscriber key pairs, reused round-robin (generating a million is slow and
    /// changes nothing: every message still gets its own ephemeral key).
    #[arg(long, default_value_t = 1000)]
    key_pool: usize,
    /// Delete every existing subscription first.
    #[arg(long)]
    replace: bool,
    /// Instead, insert this many subscriptions on push services that cannot be reached: half on
    /// made-up names that do not resolve (`nN.unreachable.invalid`, which the server must allow
    /// as `*.unreachable.invalid`), half on a loopback port that refuses connections.
    #[arg(long)]
    unreachable: Option<u64>,
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let settings = Settings::load(None)?;
    let database = Database::locate(&settings).await?;
    let pool = db::connect(database.options.clone(), 2).await?;
    let vapid_key: Vec<u8> = sqlx::query_scalar("select public_key from vapid_keys where id = 1")
        .fetch_optional(&pool)
        .await?
        .context("no VAPID key yet: start the server with SONDAKIKA_VAPID_SUBJECT set first")?;
    let rng = SystemRandom::new();
    let started = Instant::now();
    let (mut p256dh, mut auth): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for _ in 0..args.key_pool.max(1) {
        let (p, a) = subscriber_keys(&rng);
        p256dh.push(p.to_vec());
        auth.push(a.to_vec());
    }
    if args.replace {
        sqlx::query("delete from push_subscriptions").execute(&pool).await?;
    }
    let run = chrono::Utc::now().timestamp_millis();
    if let Some(n) = args.unreachable {
        sqlx::query(
            "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, vapid_key)
             select e, o, h, ($1::bytea[])[1 + g % $3], ($2::bytea[])[1 + g % $3], '{}', $4
             from generate_series(0::bigint, $5::bigint - 1) g,
             lateral (select case when g % 2 = 0
                 then 'https://n' || g || '-' || $6 || '.unreachable.invalid'
                 else 'http://localhost:1' end as o) origin,
             lateral (select o || '/push/' || $6 || '/' || g as e,
                             case when g % 2 = 0 then substr(o, 9) else 'localhost' end as h) rest",
        )
        .bind(&p256dh)
        .bind(&auth)
        .bind(p256dh.len() as i64)
        .bind(&vapid_key)
        .bind(n as i64)
        .bind(run.to_string())
        .execute(&pool)
        .await?;
        sqlx::query("vacuum analyze push_subscriptions").execute(&pool).await?;
        pool.close().await;
        eprintln!(
            "seeded {n} subscriptions on unreachable push services in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let scheme = if args.tls { "https" } else { "http" };
    let prefix = format!("{scheme}://localhost:{}/push/{run}/", args.sink_port);
    let origin = format!("{scheme}://localhost:{}", args.sink_port);
    const CHUNK: u64 = 50_000;
    let mut done = 0u64;
    while done < args.count {
        let upto = (done + CHUNK).min(args.count);
        sqlx::query(
            "insert into push_subscriptions (endpoint, origin, host, p256dh, auth, topics, vapid_key)
             select $1 || g, $2, 'localhost', ($3::bytea[])[1 + g % $5], ($4::bytea[])[1 + g % $5], '{}', $6
             from generate_series($7::bigint, $8::bigint) g",
        )
        .bind(&prefix)
        .bind(&origin)
        .bind(&p256dh)
        .bind(&auth)
        .bind(p256dh.len() as i64)
        .bind(&vapid_key)
        .bind(done as i64)
        .bind(upto as i64 - 1)
        .execute(&pool)
        .await?;
        done = upto;
    }
    // What autovacuum would do soon anyway: the fan-out's queries are planned on real figures.
    sqlx::query("vacuum analyze push_subscriptions").execute(&pool).await?;
    let active: i64 =
        sqlx::query_scalar("select count(*) from push_subscriptions where active").fetch_one(&pool).await?;
    pool.close().await;
    eprintln!(
        "seeded {} subscriptions ({} key pairs) → {origin} in {:.1} s; {active} active in total",
        args.count,
        p256dh.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
