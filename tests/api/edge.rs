//! The HTTP edge of the main port, probed as a hostile client would: connections held idle or
//! half-sent, over the caps, requests hyper cannot parse, oversized request ids, /metrics.
//!
//! The hostile client's sockets are bound to 127.0.0.2 (all of 127/8 is loopback on Linux), so
//! it is a different address from the well-behaved clients on 127.0.0.1.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::{Value, json};
use sondakika::{app::Application, auth};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, free_port, new_database, test_settings};

const STRANGER: &str = "127.0.0.2";

/// A connection from `from` (port chosen by the kernel).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts a problem+json body with this status; returns it.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.head);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.head);
        let problem: Value = serde_json::from_slice(&self.body).expect("a JSON body");
        assert_eq!(problem["status"], status, "{problem}");
        assert!(problem["title"].is_string() && problem["detail"].is_string(), "{problem}");
        problem
    }
}

/// Reads one answer (head, then `content-length` bytes or up to EOF), within `limit`.
async fn read_answer(stream: &mut TcpStream, limit: Duration) -> Option<Raw> {
    tokio::time::timeout(limit, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length = head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        });
        let mut body = buf[head_end..].to_vec();
        while length.is_none_or(|n| body.len() < n) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Some(Raw { status, head, body })
    })
    .await
    .ok()
    .flatten()
}

/// Sends `request` on a fresh connection from 127.0.0.1; returns the answer.
async fn raw(app: &TestApp, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream, Duration::from_secs(10)).await.expect("an answer")
}

/// True once the server has closed `stream` (EOF or reset), false if it is still open at `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The API, a ticker and health, as a real editor and reader use them, from 127.0.0.1.
async fn everything_answers(app: &TestApp) {
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (status, me) = app.get_json("/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    let mut ticker = app.ticker("").await;
    ticker.expect("hello").await;
    let alert = app.flag("Burdur'da deprem: okullar tatil", &[]).await;
    let frame = ticker.expect("alert").await;
    assert_eq!(frame["id"], alert["id"]);
}

#[tokio::test]
async fn one_address_holding_thousands_of_connections_does_not_stop_the_api_or_tickers() {
    let app = TestApp::spawn_with(|s| {
        s.max_tcp_connections_per_ip = 100;
        // Long enough that the stranger's connections are all still held while we look.
        s.header_read_timeout_secs = 120;
    })
    .await;
    // 2,000 connections from one address: half idle, half with a request head never finished.
    let mut stranger = Vec::new();
    for batch in 0..20 {
        let opened = join_all((0..100).map(|_| connect_from(STRANGER, app.addr))).await;
        for (i, mut stream) in opened.into_iter().enumerate() {
            if (batch * 100 + i) % 2 == 1 {
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\nX-Slow: ").await;
            }
            stranger.push(stream);
        }
    }
    everything_answers(&app).await;

    // The first hundred are held; every other one was answered 429 at once and closed.
    let answers = join_all(stranger.iter_mut().map(|s| read_answer(s, Duration::from_secs(3)))).await;
    let refused: Vec<&Raw> = answers.iter().flatten().collect();
    assert_eq!(refused.len(), 1900, "connections over the per-address cap are refused");
    let problem = refused[0].problem(429);
    assert!(problem["detail"].as_str().unwrap().contains("100"), "{problem}");
    assert!(refused[0].header("retry-after").is_some());
    let held = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(held, 100);
    everything_answers(&app).await;
}

#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|s| s.header_read_timeout_secs = 1).await;
    let started = Instant::now();
    let mut silent = connect_from(STRANGER, app.addr).await;
    let mut slow = connect_from(STRANGER, app.addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Trickling bytes does not keep it open: the timeout is for the whole head.
    slow.write_all(b"X-Slow: 1\r\n").await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(10)).await, "half-sent request still open");
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await, "silent connection still open");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout");
    everything_answers(&app).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|s| s.header_read_timeout_secs = 2).await;
    let mut stream = connect_from(STRANGER, app.addr).await;
    // Keeping a connection alive with a request now and then is fine...
    let mut idle_since = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\n\r\n").await.unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(5)).await.expect("an answer");
        assert_eq!(answer.status, 200);
        idle_since = Instant::now();
    }
    // ...holding it idle is not.
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await, "idle connection still open");
    assert!(idle_since.elapsed() >= Duration::from_secs(1), "closed before the timeout");
}

#[tokio::test]
async fn the_per_address_cap_refuses_the_excess_and_frees_a_place_when_one_closes() {
    let app = TestApp::spawn_with(|s| {
        s.max_tcp_connections_per_ip = 3;
        s.max_connections_per_ip = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(STRANGER, app.addr).await);
    }
    let mut fourth = connect_from(STRANGER, app.addr).await;
    let answer = read_answer(&mut fourth, Duration::from_secs(5)).await.expect("refused with an answer");
    answer.problem(429);
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await);
    // Another address is not affected.
    everything_answers(&app).await;

    // Once one closes, the address gets a place again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from(STRANGER, app.addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(5)).await.expect("an answer");
        if answer.status == 200 {
            again = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a place freed up is given to the next connection");
}

#[tokio::test]
async fn at_the_process_cap_accepting_pauses_until_a_connection_closes() {
    let app = TestApp::spawn_with(|s| s.max_tcp_connections = 4).await;
    // Four addresses, one connection each: the process is full.
    let mut held = Vec::new();
    for last in 2..6 {
        held.push(connect_from(&format!("127.0.0.{last}"), app.addr).await);
    }
    // A fifth client is not refused: it waits in the backlog and is answered once one closes.
    let mut waiting = TcpStream::connect(app.addr).await.unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut waiting, Duration::from_millis(1500)).await.is_none(), "served over the cap");
    drop(held.pop());
    let answer =
        read_answer(&mut waiting, Duration::from_secs(10)).await.expect("served once a place is free");
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_connection_cap_at_or_above_the_open_file_limit_is_refused_at_start_up() {
    let mut settings = test_settings(&new_database().await);
    settings.max_tcp_connections = 1 << 40;
    let e = Application::build(settings, CancellationToken::new()).await.err().expect("refused");
    let message = format!("{e:#}");
    assert!(message.contains("max_tcp_connections") && message.contains("open-file limit"), "{message}");
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_answered_with_problem_json() {
    let app = TestApp::spawn().await;
    // Not HTTP at all.
    raw(&app, b"HELLO THERE\r\n\r\n").await.problem(400);
    // A header line without a colon.
    raw(&app, b"GET /healthz HTTP/1.1\r\nHost: sondakika\r\nno colon here\r\n\r\n").await.problem(400);
    // Headers beyond 64 KiB, and beyond 100 fields.
    let big = format!("GET /healthz HTTP/1.1\r\nHost: sondakika\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    raw(&app, big.as_bytes()).await.problem(431);
    let many: String = (0..150).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    raw(&app, format!("GET /healthz HTTP/1.1\r\nHost: sondakika\r\n{many}\r\n").as_bytes())
        .await
        .problem(431);
    // A URI beyond 8 KiB.
    let long = format!(
        "GET /healthz?q={} HTTP/1.1\r\nHost: sondakika\r\nConnection: close\r\n\r\n",
        "a".repeat(9000)
    );
    raw(&app, long.as_bytes()).await.problem(414);
    everything_answers(&app).await;
}

#[tokio::test]
async fn every_error_answer_is_problem_json() {
    let app = TestApp::spawn_with(|s| {
        s.request_timeout_secs = 1;
        s.max_body_bytes = 1024;
    })
    .await;
    raw(&app, b"GET /no/such/page HTTP/1.1\r\nHost: sondakika\r\nConnection: close\r\n\r\n")
        .await
        .problem(404);
    raw(&app, b"PUT /healthz HTTP/1.1\r\nHost: sondakika\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .problem(405);
    // A body announced and never sent: the request's time limit answers 408.
    let slow = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nHost: sondakika\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"headline\"",
        app.token
    );
    raw(&app, slow.as_bytes()).await.problem(408);
    let r = app
        .http
        .post(app.url("/api/v1/alerts"))
        .bearer_auth(&app.token)
        .json(&json!({ "headline": "a".repeat(2000), "url": "https://www.example.com.tr/x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn an_oversized_or_unsafe_request_id_is_replaced_and_a_valid_one_kept() {
    let app = TestApp::spawn().await;
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    for bad in ["x".repeat(30_000), "a".repeat(65), "two words".into(), "quote\"d".into()] {
        let r = app.http.get(app.url("/no/such/page")).header("x-request-id", &bad).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let id = id_of(&r);
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "replaced by a fresh UUID, got {id:.80}");
    }
    for good in ["5f0c7a52-3c1e-4a52-9f7e-0d4c2b1a9e33", "01HZX3K5ABCDEF", &"b".repeat(64)] {
        let r = app.http.get(app.url("/healthz")).header("x-request-id", good).send().await.unwrap();
        assert_eq!(id_of(&r), good);
    }
}

#[tokio::test]
async fn metrics_on_the_main_port_need_an_admin_token() {
    let app = TestApp::spawn().await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.http.get(app.url("/metrics")).bearer_auth(&app.token).send().await.unwrap();
    assert_eq!(r.status(), 403, "an editor token is not enough");
    let (_, admin) = auth::create(&app.pool, "Yönetici", auth::Role::Admin).await.unwrap();
    let r = app.http.get(app.url("/metrics")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sondakika_http_connections"));
}

#[tokio::test]
async fn metrics_bind_serves_metrics_without_a_token() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let app = TestApp::spawn_with(|s| s.metrics_bind = Some(metrics_addr)).await;
    let r = app.http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("sondakika_http_connections"));
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "moved off the main port");
}

#[tokio::test]
async fn a_request_open_at_shutdown_still_gets_its_answer() {
    let app = TestApp::spawn().await;
    let body =
        json!({ "headline": "Kapanırken gelen haber", "url": "https://www.example.com.tr/haber/kapanis" })
            .to_string();
    let head = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nHost: sondakika\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(10)).await.expect("an answer");
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("connection"), Some("close"), "no further request on it");
    app.stop().await;
}

#[tokio::test]
async fn tickers_outlive_the_header_read_timeout() {
    let app = TestApp::spawn_with(|s| s.header_read_timeout_secs = 1).await;
    let mut ws = app.ticker("").await;
    ws.expect("hello").await;
    let mut sse = app.http.get(app.url("/sse")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    // Three header-read timeouts later both are still open and get the alert.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.flag("Uzun süren bağlantı", &[]).await;
    assert_eq!(ws.expect("alert").await["headline"], "Uzun süren bağlantı");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("Uzun süren bağlantı") {
        let chunk = tokio::time::timeout_at(deadline, sse.chunk()).await.expect("the alert within 10 s");
        let chunk = chunk.unwrap().expect("the stream is still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}
