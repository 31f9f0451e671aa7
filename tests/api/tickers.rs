//! Live tickers over WebSocket and SSE: filters, replay, slow clients, caps, origins, liveness.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::helpers::{TestApp, Ticker, eventually};

#[tokio::test]
async fn a_ticker_gets_hello_then_alerts_as_they_are_flagged() {
    let app = TestApp::spawn().await;
    let mut t = app.ticker("").await;
    let hello = t.expect("hello").await;
    assert_eq!(hello["seq"], 0);
    assert!(hello["limits"]["max_replay"].as_u64().unwrap() > 0);
    let alert = app.flag("Deprem", &[]).await;
    let frame = t.expect("alert").await;
    for field in
        ["id", "seq", "label", "headline", "summary", "url", "image", "topics", "published_at", "expires_at"]
    {
        assert!(frame.get(field).is_some(), "alert frames carry `{field}`: {frame}");
    }
    assert_eq!(frame["id"], alert["id"]);
    assert_eq!(frame["seq"], alert["seq"]);
    assert_eq!(frame["headline"], "Deprem");
}

#[tokio::test]
async fn topic_filters_apply_and_can_change_on_the_open_socket() {
    let app = TestApp::spawn().await;
    let mut spor = app.ticker("?topics=spor").await;
    assert_eq!(spor.expect("hello").await["topics"], json!(["spor"]));
    let mut all = app.ticker("").await;
    all.expect("hello").await;

    app.flag("Burdur haberi", &["burdur"]).await;
    app.flag("Maç sonucu", &["spor", "gundem"]).await;
    app.flag("Herkese duyuru", &[]).await;

    assert_eq!(spor.expect("alert").await["headline"], "Maç sonucu");
    assert_eq!(spor.expect("alert").await["headline"], "Herkese duyuru");
    for want in ["Burdur haberi", "Maç sonucu", "Herkese duyuru"] {
        assert_eq!(all.expect("alert").await["headline"], want);
    }

    spor.send(json!({ "type": "subscribe", "topics": ["burdur"] })).await;
    assert_eq!(spor.expect("subscribed").await["topics"], json!(["burdur"]));
    app.flag("Spor yine", &["spor"]).await;
    app.flag("Burdur yine", &["burdur"]).await;
    assert_eq!(spor.expect("alert").await["headline"], "Burdur yine");

    // A bad message gets an error frame, and the connection stays usable.
    spor.send(json!({ "type": "subscribe", "topics": ["Büyük Harf"] })).await;
    assert_eq!(spor.expect("error").await["type"], "error");
    spor.send(json!({ "type": "dance" })).await;
    assert_eq!(spor.expect("error").await["type"], "error");
    app.flag("Burdur üçüncü", &["burdur"]).await;
    assert_eq!(spor.expect("alert").await["headline"], "Burdur üçüncü");
}

#[tokio::test]
async fn bad_stream_queries_are_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("?topics=Gündem", "topics[0]"),
        ("?since=abc", "since"),
        ("?since=-1", "since"),
        ("?colour=red", "colour"),
    ] {
        let r = app.http.get(app.url(&format!("/sse{query}"))).send().await.unwrap();
        assert_eq!(r.status(), 422, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    // A plain GET on /ws explains itself.
    let r = app.http.get(app.url("/ws")).send().await.unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_ticker_that_reconnects_gets_exactly_what_it_missed() {
    let app = TestApp::spawn().await;
    let mut t = app.ticker("?topics=gundem").await;
    t.expect("hello").await;
    app.flag("Bir", &["gundem"]).await;
    let last_seen = t.expect("alert").await["seq"].as_i64().unwrap();
    drop(t);

    let two = app.flag("İki", &["gundem"]).await;
    app.flag("Spor (filtrelenir)", &["spor"]).await;
    let three = app.flag("Üç", &["gundem"]).await;
    let id = two["id"].as_str().unwrap();
    app.editor(reqwest::Method::POST, &format!("/api/v1/alerts/{id}/retract"), None).await;

    let mut t = app.ticker(&format!("?topics=gundem&since={last_seen}")).await;
    let hello = t.expect("hello").await;
    // Events this process has not heard of yet arrive live right after the replay, so the
    // replay count may be lower; the frames that follow are what must be exact.
    assert!(hello["replay"]["count"].as_u64().unwrap() <= 3, "{hello}");
    assert_eq!(hello["replay"]["truncated"], false);
    assert_eq!(t.expect("alert").await["id"], two["id"]);
    assert_eq!(t.expect("alert").await["id"], three["id"]);
    assert_eq!(t.expect("retract").await["id"], two["id"]);
    // Then live.
    app.flag("Dört", &["gundem"]).await;
    assert_eq!(t.expect("alert").await["headline"], "Dört");
}

#[tokio::test]
async fn replay_during_concurrent_publishing_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    for i in 0..10 {
        app.flag(&format!("Önce {i}"), &[]).await;
    }
    // Publish 60 alerts from 3 concurrent editors while tickers keep joining with since=5.
    let publisher = {
        let http = app.http.clone();
        let url = app.url("/api/v1/alerts");
        let token = app.token.clone();
        tokio::spawn(async move {
            let jobs = (0..3).map(|w| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    for i in 0..20 {
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({ "headline": format!("Eşzamanlı {w}-{i}"), "url": format!("https://x.example/{w}/{i}") }))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 201);
                    }
                }
            });
            futures_util::future::join_all(jobs).await;
        })
    };
    let mut joiners = Vec::new();
    for _ in 0..8 {
        let mut t = app.ticker("?since=5").await;
        t.expect("hello").await;
        joiners.push(t);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    publisher.await.unwrap();
    let all: Vec<i64> = sqlx::query_scalar("select seq from stream_events where seq > 5 order by seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(all.len(), 65);
    for t in &mut joiners {
        let mut got = Vec::new();
        while got.len() < all.len() {
            let f = t.next().await;
            assert_eq!(f["type"], "alert");
            got.push(f["seq"].as_i64().unwrap());
        }
        assert_eq!(got, all, "every event after since, once, in order");
        assert!(t.next_within(Duration::from_millis(200)).await.is_none(), "nothing extra");
    }
}

#[tokio::test]
async fn a_replay_older_than_the_window_says_it_is_truncated() {
    let app = TestApp::spawn_with(|s| s.replay_max_count = 3).await;
    for i in 0..6 {
        app.flag(&format!("Haber {i}"), &[]).await;
    }
    eventually(Duration::from_secs(30), "hub saw all events", || async {
        app.get_json("/readyz").await.1["stream_seq"] == 6
    })
    .await;
    let mut t = app.ticker("?since=1").await;
    let hello = t.expect("hello").await;
    assert_eq!(hello["replay"]["truncated"], true, "{hello}");
    assert_eq!(hello["replay"]["count"], 3);
    let seqs: Vec<_> =
        [t.next().await, t.next().await, t.next().await].iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4, 5, 6]);
}

#[tokio::test]
async fn sse_serves_the_same_events_and_resumes_from_last_event_id() {
    let app = TestApp::spawn().await;
    let first = app.flag("SSE bir", &[]).await;
    let second = app.flag("SSE iki", &[]).await;
    let r = app
        .http
        .get(app.url("/sse"))
        .header("last-event-id", first["seq"].to_string())
        .header("origin", "https://www.example.com.tr")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(r.headers()["access-control-allow-origin"], "https://www.example.com.tr");
    let mut r = r;
    let mut text = String::new();
    let third_posted = tokio::spawn({
        let http = app.http.clone();
        let url = app.url("/api/v1/alerts");
        let token = app.token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "headline": "SSE üç", "url": "https://x.example/3" }))
                .send()
                .await
                .unwrap()
        }
    });
    while !text.contains("SSE üç") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("SSE data")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    third_posted.await.unwrap();
    assert!(text.starts_with("retry: 3000\nevent: hello\n"), "{text}");
    assert!(!text.contains("SSE bir"), "already seen");
    let second_event =
        format!("id: {}\nevent: alert\ndata: {{\"type\":\"alert\",\"seq\":{}", second["seq"], second["seq"]);
    assert!(text.contains(&second_event), "{text}");
    assert!(text.find("SSE iki").unwrap() < text.find("SSE üç").unwrap());
}

#[tokio::test]
async fn a_slow_ticker_is_closed_without_delaying_a_fast_one() {
    let app = TestApp::spawn_with(|s| {
        s.client_queue = 8;
        s.write_timeout_secs = 2;
        s.tcp_send_buffer_bytes = 4096;
    })
    .await;
    // The slow client's socket takes almost nothing into its receive buffer and is never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    let (slow, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut fast = app.ticker("").await;
    fast.expect("hello").await;

    let metric = || async {
        let text = app.metrics().await;
        text.lines()
            .find(|l| l.starts_with("sondakika_slow_client_disconnects_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = metric().await;
    // Frames as large as alerts get (~1.6 KB of two-byte Turkish letters), enough of them to
    // fill the kernel's socket buffers for the slow reader.
    let summary = "ş".repeat(500);
    let headline_tail = "ğ".repeat(180);
    let started = std::time::Instant::now();
    for i in 0..100 {
        let r = app
            .post_alert(json!({ "headline": format!("Yoğun akış {i} {headline_tail}"), "url": format!("https://x.example/{i}"), "summary": summary }))
            .await;
        assert_eq!(r.status(), 201);
        let f = fast.expect("alert").await;
        assert_eq!(f["headline"], format!("Yoğun akış {i} {headline_tail}"));
    }
    let fast_time = started.elapsed();
    // The fast ticker kept up: every alert arrived before the next was flagged, and the whole
    // run was not held up by the slow one's 2-second write deadline.
    assert!(fast_time < Duration::from_secs(60), "{fast_time:?}");
    eventually(Duration::from_secs(30), "the slow ticker is disconnected", || async {
        metric().await > before
    })
    .await;

    // The slow client, reading now, finds its stream ended (close 4001 if the frame fit).
    let mut slow = Ticker { ws: slow };
    let code = slow.close_code_within(Duration::from_secs(15)).await;
    assert!(code.is_none() || code == Some(4001), "{code:?}");
}

#[tokio::test]
async fn the_connection_cap_answers_503_before_the_upgrade() {
    let app = TestApp::spawn_with(|s| s.max_connections = 2).await;
    let mut a = app.ticker("").await;
    a.expect("hello").await;
    let mut b = app.ticker("").await;
    b.expect("hello").await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.unwrap_err();
    match err {
        tungstenite::Error::Http(r) => assert_eq!(r.status(), 503),
        other => panic!("expected an HTTP 503, got {other}"),
    }
    let sse = app.http.get(app.url("/sse")).send().await.unwrap();
    assert_eq!(sse.status(), 503);
    assert!(sse.headers().contains_key("retry-after"));
    drop(a);
    eventually(Duration::from_secs(30), "a slot frees up", || async {
        tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused() {
    let app = TestApp::spawn().await;
    let mut req = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await.unwrap_err() {
        tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other}"),
    }
    let mut req = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("origin", "https://www.example.com.tr".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn the_server_pings_and_drops_a_dead_peer() {
    let app = TestApp::spawn_with(|s| s.ping_interval_secs = 1).await;
    // A peer that answers nothing: a raw upgrade, then silence.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            app.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("server acts within 10 s")
            .unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8), "{elapsed:?}");
    // Pings (opcode 0x9) went out, then a close frame (0x8) with code 4002.
    assert!(seen.windows(2).any(|w| w == [0x89, 0x00]), "a ping was sent");
    let close = seen.windows(4).any(|w| w[0] == 0x88 && u16::from_be_bytes([w[2], w[3]]) == 4002);
    assert!(close, "closed with 4002");
}

#[tokio::test]
async fn metrics_and_health_endpoints_answer() {
    let app = TestApp::spawn().await;
    let mut t = app.ticker("").await;
    t.expect("hello").await;
    app.flag("Ölçüm", &[]).await;
    t.expect("alert").await;
    assert_eq!(app.get_json("/healthz").await, (200, json!({ "status": "ok" })));
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")));
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"), "every answer carries a request id");
    let text = app.metrics().await;
    let names: BTreeSet<&str> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    for name in [
        "sondakika_stream_connections",
        "sondakika_alerts_published_total",
        "sondakika_frames_sent_total",
        "sondakika_fanout_latency_seconds_bucket",
        "sondakika_db_pool_connections",
        "sondakika_stream_listener_connected",
    ] {
        assert!(names.contains(name), "{name} missing from /metrics");
    }
}
