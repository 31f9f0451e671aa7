//! The API's OpenAPI 3.1 document, served at `GET /api/v1/openapi.json`.
//!
//! It is generated, never written by hand: each handler carries `#[utoipa::path]` and is routed
//! through `utoipa_axum::routes!`, so an operation's path and method are written once and serve
//! both the router and the document; request and response schemas are derived from the real
//! types the handlers parse and serialise.
//!
//! Error responses that come from the extractors and layers every handler shares are added here by
//! rule rather than repeated on each handler (and so cannot be forgotten on a new one):
//! - every operation can answer 408 (`request_timeout_secs`);
//! - an operation behind the bearer token can answer 401, and 503 (the token is looked up in the
//!   database);
//! - an operation with a JSON body can answer 400 (not JSON), 413 (`max_body_bytes`) and 415 (not
//!   `application/json`);
//! - the public push operations (tag `push`) can answer 429 (`public_rate_per_minute`).
//!
//! Statuses particular to one operation (404, 409, 422, 503 without a token) are on its handler.

use axum::{
    Extension,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use std::collections::BTreeMap;
use utoipa::{
    OpenApi,
    openapi::{
        self, ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::{app::AppState, server::error::Problem};

/// Security scheme name of the editor token.
pub const BEARER: &str = "editorToken";
/// Tag of the public push operations (rate-limited per client address).
pub const PUSH: &str = "push";

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sondakika",
        description = "Breaking-news alerts: the editor API (bearer token), the public Web Push \
                       API a news site's pages call, and health checks. Every error is \
                       `application/problem+json` (RFC 9457); every problem `type`, what it \
                       means and what to do about it is at `GET /problems` (docs/errors.md). Live tickers (`/ws`, \
                       `/sse`) are described in docs/stream-protocol.md."
    ),
    external_docs(
        url = "/problems",
        description = "Problem types: every `type` an error answer can have, its status, what to do"
    ),
    components(schemas(Problem)),
    tags(
        (name = "editor", description = "Flag, correct and retract alerts; needs an editor token."),
        (name = "admin", description = "Manage tokens and webhook endpoints; needs an admin's token."),
        (name = "push", description = "Public endpoints for news sites' pages and service workers; \
                                       rate-limited per client address."),
        (name = "health", description = "Liveness and readiness."),
        (name = "meta", description = "This document."),
    )
)]
pub struct ApiDoc;

/// Reusable responses, by name, with the statuses they stand for.
const SHARED: &[(u16, &str, &str)] = &[
    (400, "MalformedJson", "The body is not valid JSON."),
    (401, "Unauthorized", "No token, a malformed Authorization header, or an unknown or revoked token."),
    (408, "RequestTimeout", "The request took longer than `request_timeout_secs`."),
    (413, "PayloadTooLarge", "The body is larger than `max_body_bytes`."),
    (415, "UnsupportedMediaType", "The body is not sent as `application/json`."),
    (
        429,
        "TooManyRequests",
        "More than `public_rate_per_minute` requests from this address; see `Retry-After`.",
    ),
    (
        503,
        "Unavailable",
        "The database cannot be reached right now (or, for push, Web Push is not configured); see `Retry-After`.",
    ),
];

fn shared_ref(status: u16) -> RefOr<openapi::Response> {
    let name = SHARED.iter().find(|(s, ..)| *s == status).expect("a shared response").1;
    RefOr::Ref(openapi::Ref::from_response_name(name))
}

/// A problem+json response (for handlers' own statuses and the shared ones).
pub fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(RefOr::Ref(openapi::Ref::from_schema_name("Problem")))).build(),
    )
}

/// Completes the document the router was built with: the bearer scheme, and the error responses
/// every handler shares, added to each operation by the rules in the module documentation. (Not a
/// `Modify` of [`ApiDoc`]: that runs before the routes add their operations.)
pub fn finish(doc: &mut openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An editor token from `sondakika token create`."))
                .build(),
        ),
    );
    let string = || openapi::ObjectBuilder::new().schema_type(openapi::Type::String).build();
    for (status, name, description) in SHARED {
        let mut response = problem_response(description);
        match status {
            401 => {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(string())
                        .description(Some("`Bearer realm=\"sondakika\"`"))
                        .build(),
                )
            }
            429 | 503 => {
                let seconds = openapi::ObjectBuilder::new().schema_type(openapi::Type::Integer).build();
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait.")).build(),
                )
            }
            _ => {}
        }
        components.responses.insert((*name).to_string(), RefOr::T(response.build()));
    }

    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            let tags = op.tags.clone().unwrap_or_default();
            let mut statuses = vec![408];
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                statuses.extend([401, 503]);
            }
            if op.request_body.is_some() {
                statuses.extend([400, 413, 415]);
            }
            if tags.iter().any(|t| t == PUSH) {
                statuses.push(429);
            }
            for status in statuses {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| shared_ref(status));
            }
        }
    }
}

/// Routing that keeps one schema per component name. utoipa registers a request or response
/// schema under the type's bare name and, when two different types share it, silently keeps one:
/// the document then describes an operation with another operation's body. Every route and every
/// router is added through these methods instead, which refuse a name already taken by a
/// different schema, so such a build fails at startup (and with it every test) naming both.
pub trait UniqueSchemas: Sized {
    /// [`OpenApiRouter::routes`], refusing a schema name taken by a different schema.
    fn routes_unique(self, routes: UtoipaMethodRouter<AppState>) -> Self;
    /// [`OpenApiRouter::merge`], refusing a schema name taken by a different schema.
    fn merge_unique(self, other: Self) -> Self;
    /// [`OpenApiRouter::nest`], refusing a schema name taken by a different schema.
    fn nest_unique(self, path: &str, other: Self) -> Self;
}

impl UniqueSchemas for OpenApiRouter<AppState> {
    fn routes_unique(self, routes: UtoipaMethodRouter<AppState>) -> Self {
        let by: Vec<&String> = routes.1.paths.keys().collect();
        let by = format!("{by:?}");
        let mut taken = registered(self.get_openapi(), "routes added before");
        for (name, schema) in &routes.0 {
            claim(&mut taken, name, schema, &by);
        }
        self.routes(routes)
    }

    fn merge_unique(self, other: Self) -> Self {
        check_components(self.get_openapi(), other.get_openapi());
        self.merge(other)
    }

    fn nest_unique(self, path: &str, other: Self) -> Self {
        check_components(self.get_openapi(), other.get_openapi());
        self.nest(path, other)
    }
}

/// A schema name and what registered it first: the schema, as JSON, and who.
type Taken = BTreeMap<String, (serde_json::Value, String)>;

fn registered(doc: &openapi::OpenApi, by: &str) -> Taken {
    let schemas = doc.components.iter().flat_map(|c| c.schemas.iter());
    schemas.map(|(name, s)| (name.clone(), (schema_json(s), by.to_string()))).collect()
}

fn schema_json(schema: &RefOr<openapi::Schema>) -> serde_json::Value {
    serde_json::to_value(schema).expect("a schema serialises")
}

fn check_components(ours: &openapi::OpenApi, theirs: &openapi::OpenApi) {
    let theirs_by: Vec<&String> = theirs.paths.paths.keys().collect();
    let theirs_by = format!("the router of {theirs_by:?}");
    let mut taken = registered(ours, "the router it is added to");
    for (name, schema) in theirs.components.iter().flat_map(|c| c.schemas.iter()) {
        claim(&mut taken, name, schema, &theirs_by);
    }
}

/// Takes `name` for `schema`, or panics if a different schema has it: a build-time mistake that
/// must never reach a client (see [`UniqueSchemas`]).
fn claim(taken: &mut Taken, name: &str, schema: &RefOr<openapi::Schema>, by: &str) {
    if let Err(e) = try_claim(taken, name, schema, by) {
        panic!("{e}");
    }
}

fn try_claim(taken: &mut Taken, name: &str, schema: &RefOr<openapi::Schema>, by: &str) -> Result<(), String> {
    let json = schema_json(schema);
    match taken.get(name) {
        Some((first, first_by)) if *first != json => Err(format!(
            "two different OpenAPI schemas are named `{name}` (one from {first_by}, one from {by}); \
             give the types distinct names: {first} vs {json}"
        )),
        Some(_) => Ok(()),
        None => {
            taken.insert(name.to_string(), (json, by.to_string()));
            Ok(())
        }
    }
}

/// The document, serialised once when the router is built.
#[derive(Clone)]
pub struct Document(pub Bytes);

impl Document {
    pub fn new(doc: &openapi::OpenApi) -> Self {
        let mut json = serde_json::to_value(doc).expect("the OpenAPI document serialises");
        fix_link_field_names(&mut json);
        require_one_of(&mut json, "CorrectionRequest", &crate::alerts::domain::CORRECTED_FIELDS);
        // Registering a feed takes the body a change takes, with its address required.
        require_on(&mut json, ("post", "/api/v1/feeds"), "NewFeedRequest", &["url"]);
        Self(Bytes::from(serde_json::to_vec(&json).expect("a JSON value serialises")))
    }
}

/// Says that an object needs at least one of `fields` (`anyOf` their `required`), a rule the
/// derive cannot express, so that a client built from the document sends a body the handler takes.
fn require_one_of(doc: &mut serde_json::Value, schema: &str, fields: &[&str]) {
    let any_of: Vec<serde_json::Value> =
        fields.iter().map(|f| serde_json::json!({ "required": [f] })).collect();
    let target = doc.pointer_mut(&format!("/components/schemas/{schema}")).and_then(|s| s.as_object_mut());
    target.expect("the schema is in the document").insert("anyOf".into(), any_of.into());
}

/// Gives one operation its own copy of its body's schema, named `name`, with `fields` required:
/// for an operation that takes another's body but needs more of it.
fn require_on(doc: &mut serde_json::Value, (method, path): (&str, &str), name: &str, fields: &[&str]) {
    let body =
        format!("/paths/{}/{method}/requestBody/content/application~1json/schema", path.replace('/', "~1"));
    let reference =
        doc.pointer(&format!("{body}/$ref")).and_then(|r| r.as_str()).expect("a body by reference");
    let mut schema = doc.pointer(reference.trim_start_matches('#')).expect("the body's schema").clone();
    let required =
        schema.as_object_mut().expect("an object").entry("required").or_insert_with(|| serde_json::json!([]));
    required.as_array_mut().expect("a list").extend(fields.iter().map(|f| serde_json::json!(f)));
    doc["components"]["schemas"][name] = schema;
    *doc.pointer_mut(&body).expect("the body") =
        serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
}

/// utoipa 5 writes a Link Object's fields in snake case (`operation_id`); OpenAPI spells them in
/// camel case (`operationId`), and clients that follow links (schemathesis's stateful tests) look
/// for that.
fn fix_link_field_names(doc: &mut serde_json::Value) {
    let responses = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else { continue };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(snake) {
                    link.insert(camel.into(), v);
                }
            }
        }
    }
}

/// The problem-type catalogue (docs/errors.md), answered at `/problems` and at every
/// `/problems/{name}`, so that the `type` of an error answer leads to what it means.
pub async fn problem_types() -> Response {
    let mut r = include_str!("../../docs/errors.md").into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/markdown; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "This OpenAPI 3.1 document.", content_type = "application/json",
               body = serde_json::Value))
)]
pub async fn document(Extension(doc): Extension<Document>) -> Response {
    let mut r = doc.0.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The document changes only with the binary: cacheable by anyone for a while.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

#[cfg(test)]
mod tests {
    use utoipa_axum::routes;

    use super::*;

    mod tokens {
        /// One request type.
        #[derive(serde::Deserialize, utoipa::ToSchema)]
        pub struct CreateRequest {
            pub name: String,
        }

        #[utoipa::path(post, path = "/tokens", request_body = CreateRequest, responses((status = 201)))]
        pub async fn create(axum::Json(r): axum::Json<CreateRequest>) {
            let _ = r.name;
        }

        #[utoipa::path(put, path = "/tokens/again", request_body = CreateRequest, responses((status = 201)))]
        pub async fn create_again(axum::Json(r): axum::Json<CreateRequest>) {
            let _ = r.name;
        }
    }

    mod hooks {
        /// Another request type with the same bare name.
        #[derive(serde::Deserialize, utoipa::ToSchema)]
        pub struct CreateRequest {
            pub url: String,
        }

        #[utoipa::path(post, path = "/hooks", request_body = CreateRequest, responses((status = 201)))]
        pub async fn create(axum::Json(r): axum::Json<CreateRequest>) {
            let _ = r.url;
        }
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let e = std::panic::catch_unwind(f).expect_err("the collision is refused");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn two_types_with_one_schema_name_are_refused_in_one_router_and_across_routers() {
        let text = panic_text(|| {
            let _ = OpenApiRouter::<AppState>::new()
                .routes_unique(routes!(tokens::create))
                .routes_unique(routes!(hooks::create));
        });
        assert!(text.contains("`CreateRequest`") && text.contains("/hooks"), "{text}");

        for nest in [false, true] {
            let text = panic_text(move || {
                let a = OpenApiRouter::<AppState>::new().routes_unique(routes!(tokens::create));
                let b = OpenApiRouter::<AppState>::new().routes_unique(routes!(hooks::create));
                let _ = if nest { a.nest_unique("/v1", b) } else { a.merge_unique(b) };
            });
            assert!(text.contains("`CreateRequest`"), "{text}");
        }
        // The same type registered twice is no collision.
        let _ = OpenApiRouter::<AppState>::new()
            .routes_unique(routes!(tokens::create))
            .merge_unique(OpenApiRouter::new().routes_unique(routes!(tokens::create_again)));
    }
}
