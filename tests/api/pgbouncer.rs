//! The service behind PgBouncer (Debian's `pgbouncer`, installed by `scripts/setup --test`), as
//! operators of a managed database put it: the README's "Connections to PostgreSQL" says which
//! pooling mode works and why; this holds it to that.

use std::{collections::HashMap, process::Stdio, time::Duration};

use serde_json::json;
use sondakika::auth::{self, Role};
use sqlx::PgPool;

use crate::{
    helpers::{ServerProcess, Ticker, eventually, free_port, new_database, server_url, test_client},
    push::{PROCESS_PUSH_ENV, SUBJECT, bulk_subscribe_in, stored_vapid_key_in},
    push_double::{Behaviour, PushDouble},
};

/// A PgBouncer in front of the tests' PostgreSQL server, in `mode` (`session` or
/// `transaction`), as a child process that ends with the test.
pub struct PgBouncer {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl PgBouncer {
    pub async fn start(mode: &str) -> Self {
        let server = url::Url::parse(server_url()).unwrap();
        let dir = tempfile::Builder::new().prefix("sondakika-pgbouncer-").tempdir_in("/tmp").unwrap();
        let port = free_port();
        let path = dir.path().display();
        std::fs::write(dir.path().join("users.txt"), format!("\"{}\" \"\"\n", server.username())).unwrap();
        // sqlx sends `extra_float_digits` at connect, which PgBouncer refuses unless told to
        // ignore it (it does not track that parameter per client).
        let ini = format!(
            "[databases]\n* = host={host} port={pg_port}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {path}/users.txt\npool_mode = {mode}\n\
             max_client_conn = 500\ndefault_pool_size = 60\n\
             ignore_startup_parameters = extra_float_digits\nlogfile = {path}/pgbouncer.log\n",
            host = server.host_str().unwrap(),
            pg_port = server.port().unwrap(),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
        // Debian installs it in /usr/sbin, which a user's PATH may not hold.
        let bin = ["/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("pgbouncer");
        let mut cmd = tokio::process::Command::new(bin);
        // PgBouncer refuses to run as root: as root, it runs as `postgres` (as the tests'
        // PostgreSQL server does), which must be able to write its log here.
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres").unwrap().expect("a `postgres` user");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(dir.path().join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pgbouncer (Debian package `pgbouncer`: scripts/setup --test)");
        eventually(Duration::from_secs(30), "PgBouncer accepts connections", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Self { _child: child, _dir: dir, port }
    }

    /// `db_url` (a database of the tests' server) through this PgBouncer.
    pub fn url(&self, db_url: &str) -> String {
        let mut url = url::Url::parse(db_url).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }
}

/// Two processes whose every pooled connection goes through PgBouncer in `mode` (and LISTEN
/// and migrations through `direct`, when given): tickers on both get an alert flagged on one,
/// with an Idempotency-Key (advisory lock) repeated on the other; a fan-out is shared with no
/// push sent twice; a correction reaches every subscriber, woken by NOTIFY.
pub async fn the_service_works_through(mode: &str, direct: bool) {
    let bouncer = PgBouncer::start(mode).await;
    let db = new_database().await;
    let pooled = bouncer.url(&db);
    let double = PushDouble::start(SUBJECT).await;
    let mut env: Vec<(&str, &str)> = [
        PROCESS_PUSH_ENV,
        &[("SONDAKIKA_PUSH_BATCH_SIZE", "50"), ("SONDAKIKA_PUSH_CORRECTION_COALESCE_MS", "0")],
    ]
    .concat();
    env.push(("DATABASE_URL", &pooled));
    if direct {
        env.push(("SONDAKIKA_DATABASE_DIRECT_URL", &db));
    }
    let mut a = ServerProcess::start(&db, &env).await;
    let mut b = ServerProcess::start(&db, &env).await;
    // The test's own look at the database goes straight to it.
    let pool = PgPool::connect(&db).await.unwrap();
    let (_, editor) = auth::create(&pool, "Editör", Role::Editor).await.unwrap();
    double.set_vapid_key(&stored_vapid_key_in(&pool).await);
    bulk_subscribe_in(&pool, &double, 0..400, &[], Behaviour::Slow(Duration::from_millis(2))).await;
    let mut tickers = Vec::new();
    for addr in [a.addr, b.addr] {
        let mut t = Ticker::connect(&format!("ws://{addr}/ws")).await;
        t.expect("hello").await;
        tickers.push(t);
    }

    let http = test_client();
    let body = json!({ "headline": "Havalimanında sis: seferler iptal", "url": "https://www.example.com.tr/haber/sis" });
    let mut answers = Vec::new();
    for addr in [a.addr, b.addr] {
        let r = http
            .post(format!("http://{addr}/api/v1/alerts"))
            .bearer_auth(&editor)
            .header("idempotency-key", "sis-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        answers.push(r.json::<serde_json::Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(answers[0], answers[1], "the repeat got the first answer");
    let id = answers[0].as_str().unwrap().to_string();
    for t in &mut tickers {
        assert_eq!(t.expect("alert").await["id"], id.as_str());
    }
    let of = |kind: &'static str| {
        let double = double.clone();
        let id = id.clone();
        move || {
            let mut by: HashMap<u64, usize> = HashMap::new();
            for r in double.received() {
                let data = &r.payload["notification"]["data"];
                if data["id"] == id.as_str() && data["kind"] == kind && r.answered < 300 {
                    *by.entry(r.subscriber).or_default() += 1;
                }
            }
            by
        }
    };
    let alerts = of("alert");
    eventually(Duration::from_secs(60), "every subscriber got the alert", || async { alerts().len() == 400 })
        .await;

    let r = http
        .patch(format!("http://{}/api/v1/alerts/{id}", b.addr))
        .bearer_auth(&editor)
        .json(&json!({ "headline": "Havalimanında sis: seferler yeniden başladı" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let corrections = of("correction");
    eventually(Duration::from_secs(60), "every subscriber got the correction", || async {
        corrections().len() == 400
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alerts().values().chain(corrections().values()).all(|n| *n == 1), "no push sent twice");
    assert_eq!(double.violations(), Vec::<String>::new());
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());
}

#[tokio::test]
async fn behind_pgbouncer_in_session_mode_everything_works() {
    the_service_works_through("session", false).await;
}
