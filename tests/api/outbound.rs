//! The SSRF-safe outbound client (`sondakika::net`) against real servers: redirects re-checked
//! hop by hop, bounded bodies and time, and names or addresses inside refused unless allowed.

use std::time::{Duration, Instant};

use sondakika::net::{NetError, OutRequest, Outbound, PrivateHosts};
use url::Url;

use crate::origin::{Origin, Route};

fn client(private: &[&str], timeout_secs: u64) -> Outbound {
    Outbound::new(PrivateHosts::new(private), Duration::from_secs(timeout_secs), "sondakika-test").unwrap()
}

fn get(url: &str) -> OutRequest {
    OutRequest::get(Url::parse(url).unwrap())
}

#[tokio::test]
async fn an_allowed_host_is_fetched_and_redirects_inside_it_are_followed() {
    let origin = Origin::start().await;
    origin.set("/old", Route::Redirect("/feed".into()));
    origin.set("/feed", Route::doc("application/rss+xml", "<rss/>"));
    let got = client(&["127.0.0.1"], 5).fetch(get(&origin.url("/old"))).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"<rss/>");
    assert_eq!(got.url.path(), "/feed", "the final URL is where relative links resolve");
}

#[tokio::test]
async fn without_the_operator_setting_a_local_server_is_refused() {
    let origin = Origin::start().await;
    origin.set("/feed", Route::doc("application/rss+xml", "<rss/>"));
    for url in [origin.url("/feed"), origin.named_url("/feed")] {
        let err = client(&[], 5).fetch(get(&url)).await.unwrap_err();
        assert!(matches!(err, NetError::PrivateAddress { .. }), "{url}: {err}");
        assert!(err.to_string().contains("outbound_private_hosts"), "{err}");
    }
    assert!(origin.hits("/feed").is_empty(), "nothing was ever sent to it");
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_at_that_hop() {
    let origin = Origin::start().await;
    // The first hop is allowed (the operator listed it); the redirect points elsewhere inside.
    origin.set("/to-metadata", Route::Redirect("http://169.254.169.254/latest/meta-data/".into()));
    origin.set("/to-loopback", Route::Redirect(format!("http://127.0.0.2:{}/feed", origin.addr.port())));
    origin.set("/to-name", Route::Redirect(format!("http://localhost:{}/feed", origin.addr.port())));
    origin.set("/feed", Route::doc("application/rss+xml", "<rss/>"));
    let c = client(&["127.0.0.1"], 5);
    for path in ["/to-metadata", "/to-loopback", "/to-name"] {
        let err = c.fetch(get(&origin.url(path))).await.unwrap_err();
        assert!(matches!(err, NetError::PrivateAddress { .. }), "{path}: {err}");
    }
    assert!(origin.hits("/feed").is_empty());
}

#[tokio::test]
async fn redirect_loops_end() {
    let origin = Origin::start().await;
    origin.set("/a", Route::Redirect("/b".into()));
    origin.set("/b", Route::Redirect("/a".into()));
    let err = client(&["127.0.0.1"], 5).fetch(get(&origin.url("/a"))).await.unwrap_err();
    assert!(matches!(err, NetError::TooManyRedirects { .. }), "{err}");
}

#[tokio::test]
async fn a_post_is_never_redirected() {
    let origin = Origin::start().await;
    origin.set("/hook", Route::Redirect("/elsewhere".into()));
    let req = OutRequest::post(Url::parse(&origin.url("/hook")).unwrap(), "{}");
    let got = client(&["127.0.0.1"], 5).fetch(req).await.unwrap();
    assert_eq!(got.status, 302);
    assert!(origin.hits("/elsewhere").is_empty());
}

#[tokio::test]
async fn a_50_mb_body_stops_at_the_bound_with_or_without_a_length() {
    let origin = Origin::start().await;
    origin.set("/declared", Route::Huge { bytes: 50 << 20, content_length: true });
    origin.set("/chunked", Route::Huge { bytes: 50 << 20, content_length: false });
    let c = client(&["127.0.0.1"], 20);
    for path in ["/declared", "/chunked"] {
        let err = c.fetch(get(&origin.url(path)).max_bytes(1 << 20)).await.unwrap_err();
        assert!(matches!(err, NetError::TooLarge { limit, .. } if limit == 1 << 20), "{path}: {err}");
        assert!(err.to_string().contains("larger than 1048576 bytes"), "{err}");
    }
}

#[tokio::test]
async fn a_slow_server_is_cut_off_at_the_deadline() {
    let origin = Origin::start().await;
    origin.set("/slow", Route::Slow);
    let started = Instant::now();
    let err = client(&["127.0.0.1"], 2).fetch(get(&origin.url("/slow"))).await.unwrap_err();
    assert!(matches!(err, NetError::Timeout { secs: 2, .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "bounded: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_naming_the_host() {
    let port = crate::helpers::free_port();
    let err = client(&["127.0.0.1"], 5).fetch(get(&format!("http://127.0.0.1:{port}/"))).await.unwrap_err();
    assert!(matches!(err, NetError::Connect { ref host, .. } if host == "127.0.0.1"), "{err}");
}
