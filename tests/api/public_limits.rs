//! Rate limits of the public push API: IPv6 clients are one client per /64, and the
//! subscription refresh and receipts have budgets of their own.

use serde_json::json;
use sondakika::config::Settings;

use crate::helpers::TestApp;

const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

fn limited(s: &mut Settings) {
    s.vapid_subject = Some("mailto:teknik@burdurweb.com".into());
    // The server sees clients through `X-Forwarded-For`, as behind the operator's proxy.
    s.trust_forwarded_for = true;
    s.public_rate_per_minute = 3;
}

async fn live_from(app: &TestApp, ip: &str) -> u16 {
    let r = app.http.get(app.url("/api/v1/live")).header("x-forwarded-for", ip).send().await.unwrap();
    r.status().as_u16()
}

async fn subscribe_from(app: &TestApp, ip: &str, n: u32) -> u16 {
    let body = json!({
        "subscription": { "endpoint": format!("https://fcm.googleapis.com/fcm/send/reader-{n}"),
                          "keys": { "p256dh": P256DH, "auth": AUTH } },
        "topics": ["burdur"],
    });
    let r = app
        .http
        .post(app.url("/api/v1/push/subscriptions"))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn two_ipv6_addresses_in_one_64_share_a_budget() {
    let app = TestApp::spawn_with(limited).await;
    assert_eq!(live_from(&app, "2001:db8:1:2::1").await, 200);
    assert_eq!(live_from(&app, "2001:db8:1:2::2").await, 200);
    assert_eq!(live_from(&app, "2001:db8:1:2:aaaa:bbbb:cccc:dddd").await, 200);
    // The fourth request from the same /64 is over the budget, whichever address sends it.
    let r = app
        .http
        .get(app.url("/api/v1/live"))
        .header("x-forwarded-for", "2001:db8:1:2::99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));
    // Another /64 and an IPv4 client have budgets of their own.
    assert_eq!(live_from(&app, "2001:db8:1:3::1").await, 200);
    assert_eq!(live_from(&app, "192.0.2.7").await, 200);
}

#[tokio::test]
async fn subscription_refreshes_and_receipts_do_not_exhaust_the_general_budget() {
    let app = TestApp::spawn_with(limited).await;
    let office = "198.51.100.20";
    let alert = app.flag("Burdur'da deprem", &["burdur"]).await;
    // One reader subscribes (a new subscription: one request of the general budget) ...
    assert_eq!(subscribe_from(&app, office, 0).await, 201);
    // ... then twenty page loads behind the same NAT refresh it, and ten receipts come in.
    for _ in 0..20 {
        assert_eq!(
            subscribe_from(&app, office, 0).await,
            200,
            "a refresh is not limited by the general budget"
        );
    }
    for _ in 0..10 {
        let r = app
            .http
            .post(app.url("/api/v1/push/receipts"))
            .header("x-forwarded-for", office)
            .json(&json!({ "alert_id": alert["id"], "event": "shown" }))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 429, "receipts have their own budget");
    }
    // The general budget (3) had one request taken, by the new subscription.
    assert_eq!(live_from(&app, office).await, 200);
    assert_eq!(live_from(&app, office).await, 200);
    assert_eq!(live_from(&app, office).await, 429);
    // New subscriptions still draw on the general budget: a stranger creates them no faster.
    assert_eq!(subscribe_from(&app, office, 1).await, 429);
    assert_eq!(subscribe_from(&app, office, 0).await, 200, "while refreshing still works");
}

#[tokio::test]
async fn ticker_connection_caps_count_an_ipv6_64_as_one_client() {
    let app = TestApp::spawn_with(|s| {
        s.trust_forwarded_for = true;
        s.max_connections_per_ip = 2;
    })
    .await;
    let sse = |ip: &'static str| app.http.get(app.url("/sse")).header("x-forwarded-for", ip).send();
    let a = sse("2001:db8:5:6::1").await.unwrap();
    let b = sse("2001:db8:5:6::2").await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = sse("2001:db8:5:6::3").await.unwrap();
    assert_eq!(c.status(), 429, "a third stream from the same /64");
    let d = sse("2001:db8:5:7::1").await.unwrap();
    assert_eq!(d.status(), 200, "another /64 is another client");
}
