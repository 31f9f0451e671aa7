//! The published API contract: `GET /api/v1/openapi.json` describes every route the server
//! serves, with the problem+json error shape and the bearer scheme. (scripts/fuzz-api then holds
//! the server to it with schemathesis.)

use std::collections::BTreeSet;

use serde_json::Value;
use sondakika::{alerts::domain, validation};
use uuid::Uuid;

use crate::helpers::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let r = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let cache = r.headers()["cache-control"].to_str().unwrap();
    assert!(cache.starts_with("public"), "the document is cacheable: {cache}");
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).expect("the document is JSON")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            doc.pointer(r.strip_prefix('#').expect("a local reference")).expect("the reference resolves")
        }
        None => v,
    }
}

/// The paths the router serves, read from the router itself. axum has no public way to list its
/// routes, but its `Debug` output names every one; the assertions below make sure that reading
/// found them, so a change of that output fails this test rather than emptying it.
fn served_paths(app: &TestApp) -> BTreeSet<String> {
    let router = sondakika::app::router(app.state.clone());
    let debug = format!("{router:?}");
    debug.split('"').filter(|s| s.starts_with('/') && !s.contains(' ')).map(str::to_string).collect()
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_under_api_v1() {
    let app = TestApp::spawn_with(|s| s.public_rate_per_minute = 10_000).await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "OpenAPI 3.1: {}", doc["openapi"]);
    let documented = doc["paths"].as_object().expect("paths");

    let served: BTreeSet<String> =
        served_paths(&app).into_iter().filter(|p| p.starts_with("/api/v1/")).collect();
    for known in [
        "/api/v1/alerts",
        "/api/v1/alerts/{id}",
        "/api/v1/push/subscriptions",
        "/api/v1/tokens/{id}",
        "/api/v1/openapi.json",
    ] {
        assert!(served.contains(known), "the router's paths were read ({known} among {served:?})");
    }
    let mut operations = 0;
    for path in &served {
        let item = documented.get(path).unwrap_or_else(|| panic!("{path} is served but not documented"));
        // Which methods the route answers, asked over HTTP: anything but 405 is served.
        let id =
            if path.starts_with("/api/v1/tokens") { "12345".to_string() } else { Uuid::new_v4().to_string() };
        let concrete = path.replace("{id}", &id);
        for method in METHODS {
            let r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            let served = r.status() != 405;
            assert_eq!(
                served,
                item.get(method).is_some(),
                "{} {path}: answered {}, documented: {}",
                method.to_uppercase(),
                r.status(),
                item.get(method).is_some()
            );
            operations += served as usize;
        }
    }
    // And nothing is documented that is not served.
    for path in documented.keys() {
        assert!(
            served.contains(path) || ["/healthz", "/readyz"].contains(&path.as_str()),
            "{path} is documented but not served"
        );
    }
    assert!(operations >= 13, "{operations} operations under /api/v1");
    app.stop().await;
}

#[tokio::test]
async fn every_documented_error_is_problem_json_and_editor_operations_need_the_bearer_token() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;

    let scheme = &doc["components"]["securitySchemes"]["editorToken"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"].as_str().map(str::to_ascii_lowercase).as_deref(), Some("bearer"));

    let problem = &doc["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> =
        problem["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, BTreeSet::from(["type", "title", "status", "detail"]), "{problem}");
    for field in ["field", "errors"] {
        assert!(problem["properties"].get(field).is_some(), "Problem has `{field}`: {problem}");
    }

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap().iter().filter(|(m, _)| METHODS.contains(&m.as_str())) {
            let name = format!("{} {path}", method.to_uppercase());
            let editor = op["tags"].as_array().unwrap().iter().any(|t| t == "editor" || t == "admin");
            let security = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            assert_eq!(editor, security, "{name}: editor operations, and only they, need the token");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("408"), "{name}: every request can time out");
            if editor {
                assert!(responses.contains_key("401"), "{name}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415"] {
                    assert!(responses.contains_key(status), "{name} has a body, so it can answer {status}");
                }
            }
            for (status, response) in responses {
                let response = resolve(&doc, response);
                let content = response.get("content").and_then(Value::as_object);
                if status.starts_with('4') || status.starts_with('5') {
                    let content = content.unwrap_or_else(|| panic!("{name} {status} has a body"));
                    let keys: Vec<&String> = content.keys().collect();
                    assert_eq!(keys, ["application/problem+json"], "{name} {status}");
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{name} {status}"
                    );
                } else if let Some(content) = content {
                    // JSON, or for a stream (the console's drafts) Server-Sent Events.
                    let stream = path.ends_with("/stream");
                    let expected = if stream { "text/event-stream" } else { "application/json" };
                    assert!(content.contains_key(expected), "{name} {status}: {content:?}");
                }
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_documented_limits_are_the_ones_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let new_alert = &doc["components"]["schemas"]["NewAlertRequest"];
    let props = &new_alert["properties"];
    for (field, max) in [
        ("headline", domain::MAX_HEADLINE_CHARS),
        ("url", validation::MAX_URL_CHARS),
        ("summary", domain::MAX_SUMMARY_CHARS),
        ("image", validation::MAX_URL_CHARS),
        ("article_id", domain::MAX_ARTICLE_ID_CHARS),
        ("label", domain::MAX_LABEL_CHARS),
    ] {
        assert_eq!(props[field]["maxLength"], max as u64, "NewAlertRequest.{field}: {}", props[field]);
    }
    assert_eq!(props["topics"]["maxItems"], domain::MAX_TOPICS as u64);
    assert_eq!(props["ttl_seconds"]["minimum"], domain::MIN_TTL_SECS as u64);
    assert_eq!(props["ttl_seconds"]["maximum"], domain::MAX_TTL_SECS as u64);
    let required: BTreeSet<&str> =
        new_alert["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, BTreeSet::from(["headline", "url"]));
    assert_eq!(new_alert["additionalProperties"], false, "unknown fields are refused");

    let correction = &doc["components"]["schemas"]["CorrectionRequest"]["properties"];
    assert_eq!(correction["headline"]["maxLength"], domain::MAX_HEADLINE_CHARS as u64);
    assert_eq!(correction["summary"]["maxLength"], domain::MAX_SUMMARY_CHARS as u64);
    let reason = &doc["components"]["schemas"]["RetractRequest"]["properties"]["reason"];
    assert_eq!(reason["maxLength"], domain::MAX_REASON_CHARS as u64);
    let endpoint = &doc["components"]["schemas"]["SubscriptionJson"]["properties"]["endpoint"];
    assert_eq!(endpoint["maxLength"], sondakika::push::subscription::MAX_ENDPOINT_CHARS as u64);

    // Links from a created alert to what can be done with it, spelled as OpenAPI spells them.
    let links = &doc["paths"]["/api/v1/alerts"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["GetAlert"]["operationId"], "get_alert", "{links}");
    assert_eq!(links["GetAlert"]["parameters"]["id"], "$response.body#/id");
    for link in links.as_object().unwrap().values() {
        let id = link["operationId"].as_str().unwrap();
        let target = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .any(|op| op["operationId"] == id);
        assert!(target, "link to a real operation: {id}");
    }
    app.stop().await;
}

/// Found by schemathesis (scripts/fuzz-api): an unknown field with an empty name (`{"": 1}`, or
/// `?=1`), or a bad value under one (`?=%1D`), was reported as the field `` — naming nothing. It
/// is the body's or the query's fault.
#[tokio::test]
async fn an_unknown_field_without_a_name_is_blamed_on_the_body_or_the_query() {
    let app = TestApp::spawn().await;
    let r = app.editor(reqwest::Method::POST, "/api/v1/alerts", Some(serde_json::json!({"": 1}))).await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "body", "{problem}");
    assert_eq!(problem["errors"][0]["field"], "body", "{problem}");

    for query in ["?=1", "?=%1D"] {
        let r = app.editor(reqwest::Method::GET, &format!("/api/v1/alerts{query}"), None).await;
        assert_eq!(r.status(), 422);
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["field"], "query", "{query}: {problem}");
    }
    app.stop().await;
}
