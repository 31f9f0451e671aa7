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
use utoipa::{
    OpenApi,
    openapi::{
        self, ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::server::error::Problem;

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
                       `application/problem+json` (RFC 9457). Live tickers (`/ws`, `/sse`) are \
                       described in docs/stream-protocol.md."
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

/// The document, serialised once when the router is built.
#[derive(Clone)]
pub struct Document(pub Bytes);

impl Document {
    pub fn new(doc: &openapi::OpenApi) -> Self {
        let mut json = serde_json::to_value(doc).expect("the OpenAPI document serialises");
        fix_link_field_names(&mut json);
        Self(Bytes::from(serde_json::to_vec(&json).expect("a JSON value serialises")))
    }
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
