//! Authentication and roles: the bearer scheme in any case, and the admin-only token API.

use serde_json::{Value, json};
use sondakika::auth;

use crate::helpers::TestApp;

async fn as_token(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type =
        r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), content_type)
}

#[tokio::test]
async fn the_authorization_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .http
            .get(app.url("/api/v1/me"))
            .header("authorization", format!("{scheme} {}", app.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "scheme `{scheme}`");
    }
    let r = app
        .http
        .get(app.url("/api/v1/me"))
        .header("authorization", format!("Basic {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn only_admins_manage_tokens_and_editors_get_403() {
    let app = TestApp::spawn().await;
    let (admin_id, admin) = auth::create(&app.pool, "Yönetici Zeynep", auth::Role::Admin).await.unwrap();
    use reqwest::Method;

    // An editor may use the alert API but not the token API: 403 problem+json on every call.
    for (method, path, body) in [
        (Method::GET, "/api/v1/tokens".to_string(), None),
        (Method::POST, "/api/v1/tokens".to_string(), Some(json!({ "name": "Kötü niyet", "role": "admin" }))),
        (Method::DELETE, format!("/api/v1/tokens/{admin_id}"), None),
    ] {
        let (status, problem, content_type) = as_token(&app, &app.token, method.clone(), &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(problem["detail"].as_str().unwrap().contains("admin"), "{problem}");
    }
    let count: i64 =
        sqlx::query_scalar("select count(*) from editor_tokens").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 2, "the editor created nothing");
    let (status, me, _) = as_token(&app, &app.token, Method::GET, "/api/v1/me", None).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("editor")));

    // An admin creates a token; it is in the answer once, and only its hash is stored.
    let (status, created, _) =
        as_token(&app, &admin, Method::POST, "/api/v1/tokens", Some(json!({ "name": "Mehmet Öztürk" })))
            .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["role"], "editor", "editor by default");
    assert_eq!(created["name"], "Mehmet Öztürk");
    let new_token = created["token"].as_str().unwrap().to_string();
    let new_id = created["id"].as_i64().unwrap();
    let stored: i64 =
        sqlx::query_scalar("select count(*) from editor_tokens where hint like 'sdk_%' and id = $1")
            .bind(new_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1);
    let (status, me, _) = as_token(&app, &new_token, Method::GET, "/api/v1/me", None).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("Mehmet Öztürk")));

    // The list shows every token, never a token's value or hash.
    let (status, list, _) = as_token(&app, &admin, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let text = list.to_string();
    assert!(!text.contains(&new_token) && !text.contains(&app.token) && !text.contains("token_hash"));
    assert!(items.iter().any(|t| t["id"] == new_id && t["role"] == "editor" && t["revoked_at"].is_null()));

    // Bad input is named.
    let (status, problem, _) = as_token(
        &app,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "Ayşe\u{202E}", "role": "root" })),
    )
    .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "role"]);

    // Revoking works at once; an unknown id is 404.
    let (status, _, _) =
        as_token(&app, &admin, Method::DELETE, &format!("/api/v1/tokens/{new_id}"), None).await;
    assert_eq!(status, 204);
    let (status, _, _) = as_token(&app, &new_token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(status, 401);
    let (status, _, content_type) =
        as_token(&app, &admin, Method::DELETE, "/api/v1/tokens/999999", None).await;
    assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));

    // An admin may do what an editor does.
    let r = app
        .http
        .post(app.url("/api/v1/alerts"))
        .bearer_auth(&admin)
        .json(&json!({ "headline": "Burdur'da deprem", "url": "https://www.example.com.tr/haber/1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn the_cli_and_the_http_token_api_see_the_same_tokens() {
    let app = TestApp::spawn().await;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sondakika"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db_url);
        cmd
    };
    // An admin token made with the CLI works on the HTTP API.
    let out = cli(&["token", "create", "--name", "Yönetici", "--role", "admin"]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (status, created, _) = as_token(
        &app,
        &admin,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({ "name": "Mehmet Öztürk", "role": "admin" })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // A token made over HTTP is listed and revoked by the CLI.
    let out = cli(&["token", "list"]).output().await.unwrap();
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(listed.contains("Mehmet Öztürk") && listed.contains("admin"), "{listed}");
    let id = created["id"].as_i64().unwrap().to_string();
    let out = cli(&["token", "revoke", &id]).output().await.unwrap();
    assert!(out.status.success());
    let token = created["token"].as_str().unwrap();
    let (status, _, _) = as_token(&app, token, reqwest::Method::GET, "/api/v1/me", None).await;
    assert_eq!(status, 401);
}
