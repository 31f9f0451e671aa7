//! The editors' command line against a real server and the push-service double: `alert correct`
//! and `alert retract` follow their push step to every device (or return at once with
//! `--no-wait`), and every refusal is told plainly.

use std::{process::Output, time::Duration};

use serde_json::Value;

use crate::{
    helpers::{TestApp, eventually},
    push::{bulk_subscribe, push_app, wait_done},
    push_double::{Behaviour, PushDouble},
};

/// Runs `sondakika` with this app's server and editor token.
async fn cli(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"))
        .args(args)
        .env("SONDAKIKA_SERVER", &app.base)
        .env("SONDAKIKA_TOKEN", &app.token)
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The pushes of one alert of one kind (`alert`, `correction`, `retraction`) the double accepted.
fn pushes(double: &PushDouble, alert_id: &str, kind: &str) -> Vec<Value> {
    double
        .received()
        .into_iter()
        .filter(|r| r.payload["notification"]["data"]["id"] == alert_id)
        .filter(|r| r.payload["notification"]["data"]["kind"] == kind)
        .map(|r| r.payload)
        .collect()
}

async fn steps(app: &TestApp, id: &str) -> Vec<Value> {
    app.get_json(&format!("/api/v1/alerts/{id}")).await.1["push_steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_cli_corrects_and_retracts_following_each_step_until_every_device_has_it() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..300, &[], Behaviour::Accept).await;
    let alert = app.flag("Burdur'da deprem", &[]).await;
    let id = alert["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(60)).await;

    // Alert again: the command returns once the correction's step is done, on its figures.
    let out =
        cli(&app, &["alert", "correct", id, "--headline", "Burdur'da 4,2 büyüklüğünde deprem", "--renotify"])
            .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("corrected") && stdout.contains("readers are alerted again"), "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("correction reached 300 of 300 devices · done · pending 0"), "{stderr}");
    assert!(last.contains("50/95/100 %: ") && !last.ends_with("– / – / –"), "times of the step: {last}");
    // When it returned, the step was over and every device had the correction, alerting again.
    let s = steps(&app, id).await;
    let correction = s.iter().rfind(|s| s["kind"] == "correction").expect("a correction step");
    assert_eq!((correction["state"].as_str(), correction["sent"].as_i64()), (Some("done"), Some(300)));
    let renotified = pushes(&double, id, "correction");
    assert_eq!(renotified.len(), 300);
    assert!(
        renotified.iter().all(|p| p["notification"]["data"]["renotify"] == true),
        "--renotify alerts again"
    );
    assert!(
        renotified
            .iter()
            .all(|p| p["notification"]["title"] == "SON DAKİKA: Burdur'da 4,2 büyüklüğünde deprem")
    );

    // The default replaces the notification quietly.
    let out = cli(&app, &["alert", "correct", id, "--summary", "AFAD: hasar yok."]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("replaced quietly"), "{stdout}");
    assert!(
        stderr.lines().last().unwrap_or_default().starts_with("correction reached 300 of 300 devices · done")
    );
    let quiet: Vec<Value> = pushes(&double, id, "correction").into_iter().skip(300).collect();
    assert_eq!(quiet.len(), 300);
    assert!(
        quiet
            .iter()
            .all(|p| p["notification"]["silent"] == true && p["notification"]["data"]["renotify"] == false)
    );
    assert!(quiet.iter().all(|p| p["notification"]["body"] == "AFAD: hasar yok."));

    // The retraction follows every device that was sent the alert.
    let out = cli(&app, &["alert", "retract", id, "--reason", "Yanlış bilgi"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("retracted"), "{stdout}");
    assert!(
        stderr.lines().last().unwrap_or_default().starts_with("retraction reached 300 of 300 devices · done"),
        "{stderr}"
    );
    assert_eq!(pushes(&double, id, "retraction").len(), 300);
    assert_eq!(double.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn with_no_wait_the_cli_returns_while_the_step_is_under_way_and_no_push_sends_nothing() {
    let (app, double) = push_app(|_| {}).await;
    bulk_subscribe(&app, &double, 0..40, &[], Behaviour::Accept).await;
    let alert = app.flag("Göl'de su seviyesi yükseldi", &[]).await;
    let id = alert["id"].as_str().unwrap();
    wait_done(&app, id, Duration::from_secs(60)).await;

    // Tickers only: said so, nothing followed, no push, no step.
    let out =
        cli(&app, &["alert", "correct", id, "--headline", "Göl'de su seviyesi 40 cm yükseldi", "--no-push"])
            .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("tickers only"), "{stdout}");
    assert!(!stderr.contains("reached"), "nothing to follow: {stderr}");
    tokio::time::sleep(Duration::from_secs(4)).await; // past the coalescing window
    assert_eq!(pushes(&double, id, "correction").len(), 0);
    assert!(steps(&app, id).await.iter().all(|s| s["kind"] != "correction"));

    // --no-wait: back at once, the step still to come; it then reaches everyone on its own.
    let out = cli(&app, &["alert", "correct", id, "--summary", "DSİ uyardı.", "--no-wait"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("reached"), "{stderr}");
    let s = steps(&app, id).await;
    let step = s.iter().rfind(|s| s["kind"] == "correction").expect("the correction's step exists at once");
    assert_ne!(step["state"], "done", "--no-wait returned before the step was done: {step}");
    eventually(Duration::from_secs(30), "the correction to reach every device", || async {
        pushes(&double, id, "correction").len() == 40
    })
    .await;

    // --renotify and --no-push contradict each other: refused before anything is sent.
    let out = cli(&app, &["alert", "correct", id, "--headline", "x", "--renotify", "--no-push"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("cannot be used with"), "{}", text(&out).1);
}

#[tokio::test]
async fn the_cli_tells_each_refusal_with_its_field_and_status() {
    let app = TestApp::spawn().await;
    let alert = app.flag("Seçim sonuçları açıklandı", &[]).await;
    let id = alert["id"].as_str().unwrap();

    let out = cli(&app, &["alert", "correct", id, "--url", "not a url"]).await;
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(stderr.contains("(422)") && stderr.contains("url"), "{stderr}");

    // Several fields at fault: each on its own line.
    let out = cli(&app, &["alert", "correct", id, "--headline", "", "--url", "not a url"]).await;
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(stderr.contains("\n  headline: ") && stderr.contains("\n  url: "), "{stderr}");

    // Nothing to correct: the server says what is needed.
    let out = cli(&app, &["alert", "correct", id]).await;
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(stderr.contains("(422)") && stderr.contains("headline, summary, url, image"), "{stderr}");

    let unknown = uuid::Uuid::new_v4().to_string();
    for args in
        [["alert", "correct", &unknown, "--headline", "x"].as_slice(), &["alert", "retract", &unknown]]
    {
        let out = cli(&app, args).await;
        let stderr = text(&out).1;
        assert!(!out.status.success());
        assert!(stderr.starts_with("error: ") && stderr.contains("(404)"), "{args:?}: {stderr}");
    }

    // Web Push off on this server: the retraction is done, with nothing to follow on devices.
    let out = cli(&app, &["alert", "retract", id]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("retracted") && stderr.contains("no push to follow"), "{stderr}");

    // A proxy's error page instead of the API: its status and first line, not a parse error.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let body = "<html><body>502 Bad Gateway</body></html>";
            let _ = socket
                .write_all(
                    format!(
                        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"))
        .args(["alert", "retract", id, "--server", &format!("http://{addr}"), "--token", &app.token])
        .output()
        .await
        .unwrap();
    let stderr = text(&out).1;
    assert!(!out.status.success());
    assert!(stderr.contains("502") && stderr.contains("not with a problem+json error"), "{stderr}");
}
