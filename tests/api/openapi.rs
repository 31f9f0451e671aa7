//! The published API contract: `GET /api/v1/openapi.json` describes every route the server
//! serves, with the problem+json error shape and the bearer scheme. (scripts/fuzz-api then holds
//! the server to it with schemathesis.)

use std::{collections::BTreeSet, time::Duration};

use serde_json::{Value, json};
use sondakika::{
    alerts::domain,
    auth::{self, Role},
    validation,
};
use uuid::Uuid;

use crate::{
    helpers::TestApp,
    push::{push_app, receipts_of, subscribe, wait_done},
    push_double::Behaviour,
};

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

/// A value that the schema describes, built from the schema alone: every property when `all`,
/// else only the required ones. Strings follow the schema's `example`, else its `format`, else
/// its `pattern`, within its length bounds; numbers are within their bounds.
fn example(doc: &Value, schema: &Value, all: bool) -> Value {
    let schema = resolve(doc, schema);
    // A fresh URL or id each time (two alerts with one URL are one alert), else the example.
    if schema.get("format").is_some_and(|f| f == "uri" || f == "uuid") {
        return Value::String(example_string(schema));
    }
    if let Some(example) = schema.get("example").or_else(|| schema.get("examples").and_then(|e| e.get(0))) {
        return example.clone();
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().find(|v| !v.is_null()).expect("an enum with a value").clone();
    }
    for combinator in ["oneOf", "anyOf"] {
        // `anyOf` beside `properties`: alternatives of what is required, the first one taken.
        if schema.get("properties").is_some() {
            continue;
        }
        if let Some(variants) = schema.get(combinator).and_then(Value::as_array) {
            let variant =
                variants.iter().find(|v| resolve(doc, v)["type"] != "null").expect("a non-null variant");
            return example(doc, variant, all);
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = serde_json::Map::new();
        for part in parts {
            if let Value::Object(o) = example(doc, part, all) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").expect("a type"),
        _ if schema.get("properties").is_some() => "object",
        // No type: any value is valid.
        _ => return Value::Null,
    };
    match kind {
        "object" => {
            let required: BTreeSet<&str> = [&schema["required"], &schema["anyOf"][0]["required"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut object = serde_json::Map::new();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if all || required.contains(name.as_str()) {
                    object.insert(name.clone(), example(doc, property, all));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let n = schema["minItems"].as_u64().unwrap_or(0).max(1);
            Value::Array((0..n).map(|_| example(doc, &schema["items"], all)).collect())
        }
        "integer" | "number" => {
            // Inside the bounds rather than on one: a bound the server narrows by configuration
            // (a feed's poll interval) is documented as its widest.
            let min = schema["minimum"].as_i64().unwrap_or(1);
            let max = schema["maximum"].as_i64().unwrap_or(min.max(1) * 1000);
            json!(min + (max - min) / 2)
        }
        "boolean" => json!(true),
        "string" => Value::String(example_string(schema)),
        other => panic!("a schema type the example builder does not know: {other} in {schema}"),
    }
}

fn example_string(schema: &Value) -> String {
    let text = match schema["format"].as_str() {
        Some("uuid") => Uuid::new_v4().to_string(),
        Some("date-time") => (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
        Some("uri") => format!("https://www.example.com.tr/haber/{}", Uuid::new_v4().simple()),
        Some(other) => panic!("a string format the example builder does not know: {other}"),
        None => match schema["pattern"].as_str() {
            Some(pattern) => from_pattern(pattern),
            None => "Örnek".to_string(),
        },
    };
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().map_or(usize::MAX, |m| m as usize);
    let mut text = text;
    while text.chars().count() < min {
        text.push('ş');
    }
    text.chars().take(max).collect()
}

/// The shortest string a simple regular expression matches: anchors, literal characters and
/// escapes, character classes, groups, and the quantifiers `?`, `*`, `+`, `{n}`, `{n,m}`.
fn from_pattern(pattern: &str) -> String {
    fn quantifier(chars: &[char], i: &mut usize) -> usize {
        match chars.get(*i) {
            Some('?') | Some('*') => {
                *i += 1;
                0
            }
            Some('+') => {
                *i += 1;
                1
            }
            Some('{') => {
                let end = chars[*i..].iter().position(|c| *c == '}').expect("a closed quantifier") + *i;
                let inner: String = chars[*i + 1..end].iter().collect();
                *i = end + 1;
                inner.split(',').next().unwrap().parse().expect("a repetition count")
            }
            _ => 1,
        }
    }
    fn sequence(chars: &[char], i: &mut usize) -> String {
        let mut out = String::new();
        while *i < chars.len() && chars[*i] != ')' && chars[*i] != '|' {
            let atom = match chars[*i] {
                '^' | '$' => {
                    *i += 1;
                    continue;
                }
                '\\' => {
                    *i += 2;
                    match chars[*i - 1] {
                        'd' => "0".to_string(),
                        'w' => "a".to_string(),
                        c => c.to_string(),
                    }
                }
                '[' => {
                    let first = chars[*i + 1];
                    assert_ne!(first, '^', "a negated class in {chars:?}");
                    *i += chars[*i..].iter().position(|c| *c == ']').expect("a closed class") + 1;
                    first.to_string()
                }
                '(' => {
                    *i += 1;
                    let inner = sequence(chars, i);
                    while chars.get(*i) == Some(&'|') {
                        *i += 1;
                        sequence(chars, i);
                    }
                    assert_eq!(chars.get(*i), Some(&')'), "a closed group in {chars:?}");
                    *i += 1;
                    inner
                }
                '.' => {
                    *i += 1;
                    "a".to_string()
                }
                c => {
                    *i += 1;
                    c.to_string()
                }
            };
            out.push_str(&atom.repeat(quantifier(chars, i)));
        }
        out
    }
    let chars: Vec<char> = pattern.chars().collect();
    sequence(&chars, &mut 0)
}

#[test]
fn the_example_builder_meets_the_patterns_it_is_given() {
    assert_eq!(from_pattern("^[a-z0-9][a-z0-9-]{0,39}$"), "a");
    assert_eq!(from_pattern("^[0-9]{1,19}\\.[A-Za-z0-9_-]{22}$"), format!("0.{}", "A".repeat(22)));
    assert_eq!(from_pattern("^[0-9]+(\\.[0-9]+)?$"), "0");
    assert_eq!(from_pattern("^[Hh][Tt][Tt][Pp][Ss]?:"), "HTTP:");
}

/// Sets `value` at `pointer` (`/a/b`) in `body`, creating the last step.
fn set(body: &mut Value, pointer: &str, value: Value) {
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    body.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("the parent exists")
        .insert(name.into(), value);
}

/// The document and the handlers cannot drift: for every operation with a body, a body built from
/// its documented schema alone (once with only the required fields, once with every field) is
/// accepted. Only values no schema can express come from elsewhere: a browser's push
/// subscription (its keys must be a real P-256 key and secret) and a push's receipt (a token
/// this server signed).
#[tokio::test]
async fn every_operation_with_a_body_accepts_a_body_built_from_its_documented_schema() {
    let (app, double) = push_app(|s| {
        s.public_rate_per_minute = 10_000;
        s.public_receipt_rate_per_minute = 10_000;
        s.public_subscribe_rate_per_minute = 10_000;
    })
    .await;
    let admin = auth::create(&app.pool, "Yönetici", Role::Admin).await.unwrap().1;
    let doc = document(&app).await;

    // One subscriber per pass, each sent one push, for the receipt.
    let subscribers = [double.subscriber(1, Behaviour::Accept), double.subscriber(2, Behaviour::Accept)];
    for s in &subscribers {
        assert!(subscribe(&app, s.clone(), &[]).await.status().is_success());
    }
    let alert = app.flag("Belgeden örnek", &[]).await;
    let alert_id = alert["id"].as_str().unwrap().to_string();
    wait_done(&app, &alert_id, Duration::from_secs(30)).await;
    let receipts = receipts_of(&double, &alert_id);

    // Every operation with a body, deletions last (a subscription is refreshed and sent a receipt
    // before it is removed).
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(body) = op.get("requestBody") {
                let schema = resolve(&doc, body)["content"]["application/json"]["schema"].clone();
                assert!(schema.is_object(), "{method} {path}: a JSON body");
                operations.push((method.clone(), path.clone(), schema));
            }
        }
    }
    operations.sort_by_key(|(method, path, _)| (method == "delete", path.clone()));
    assert!(operations.len() >= 11, "{} operations with a body", operations.len());

    for (pass, all) in [false, true].into_iter().enumerate() {
        let subscriber = &subscribers[pass];
        for (method, path, schema) in &operations {
            let mut body = example(&doc, schema, all);
            match path.as_str() {
                "/api/v1/push/subscriptions" if method == "post" => {
                    set(&mut body, "/subscription", subscriber.clone());
                }
                "/api/v1/push/subscriptions" => set(&mut body, "/endpoint", subscriber["endpoint"].clone()),
                "/api/v1/push/receipts" => {
                    set(&mut body, "/alert_id", json!(alert_id));
                    set(&mut body, "/receipt", json!(receipts[&(pass as u64 + 1)]));
                }
                _ => {}
            }
            // A path with an id: a fresh resource, created from its collection's documented body.
            let concrete = match path.split_once("/{id}") {
                None => path.clone(),
                Some((collection, rest)) => {
                    let create = &doc["paths"][collection]["post"]["requestBody"];
                    let schema = &resolve(&doc, create)["content"]["application/json"]["schema"];
                    let r = app
                        .http
                        .post(app.url(collection))
                        .bearer_auth(&admin)
                        .json(&example(&doc, schema, false))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let created: Value = r.json().await.unwrap();
                    assert!(
                        status.is_success(),
                        "POST {collection} (for {method} {path}): {status} {created}"
                    );
                    let id = created["id"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| created["id"].to_string());
                    format!("{collection}/{id}{rest}")
                }
            };
            let r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let answer = r.text().await.unwrap();
            assert!(
                status.is_success(),
                "{} {path} with {} fields of its documented schema: {body}\nanswered {status}: {answer}",
                method.to_uppercase(),
                if all { "all the" } else { "the required" },
            );
        }
    }
    app.stop().await;
}
