//! The one error type of the HTTP API, answered as `application/problem+json` (RFC 9457).
//!
//! Each variant knows its status and writes a message a person can act on. Database and
//! internal causes are logged with their chain and answered opaquely: nothing internal leaks.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use std::panic::Location;

use crate::validation::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64, detail: String },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A database error, with where the handler met it (the `?` that turned it into this), so
    /// that the log line of a 500 names the operation that failed.
    #[error("database error at {at}: {source}")]
    Database { source: sqlx::Error, at: &'static Location<'static> },
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    #[track_caller]
    fn from(source: sqlx::Error) -> Self {
        Self::Database { source, at: Location::caller() }
    }
}

impl From<anyhow::Error> for ApiError {
    /// Adds where the handler met the error to its chain, as for [`ApiError::Database`].
    #[track_caller]
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e.context(format!("at {}", Location::caller())))
    }
}

/// An error, as every API answer that is one reads (`application/problem+json`, RFC 9457).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// What kind of problem, as a relative URI: `/problems/validation`, `/problems/not-found`, ...
    #[serde(rename = "type")]
    #[schema(example = "/problems/validation")]
    kind: &'a str,
    /// The kind of problem in a few words.
    title: &'a str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for a person to act on.
    detail: String,
    /// The first field at fault (invalid input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// Every field at fault (invalid input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database { source, .. } if is_unavailable(source) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The database being down or overloaded is not a bug: answer 503 so clients retry.
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, title) = self.kind();
        let (field, errors) = match &self {
            Self::Validation(errors) => (errors.first().map(|e| e.field.as_str()), Some(errors.as_slice())),
            _ => (None, None),
        };
        let problem = Problem { kind, title, status: status.as_u16(), detail: self.detail(), field, errors };
        let body = serde_json::to_vec(&problem).expect("problem serialises");
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        self.add_headers(status, response.headers_mut());
        response
    }
}

const UNAVAILABLE: (&str, &str) = ("/problems/unavailable", "Service temporarily unavailable");

const INTERNAL_DETAIL: &str = "something went wrong on our side; it has been logged";

impl ApiError {
    /// The problem's type and title: what kind of error, in a few words, the same for every
    /// answer of its kind so that clients can branch on it.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::Validation(_) => ("/problems/validation", "The request has invalid fields"),
            Self::MalformedJson(_) => ("/problems/malformed-json", "The request body is not valid JSON"),
            Self::UnsupportedMediaType => ("/problems/unsupported-media-type", "Send JSON"),
            Self::PayloadTooLarge { .. } => ("/problems/payload-too-large", "The request body is too large"),
            Self::Unauthorized(_) => ("/problems/unauthorized", "Authentication required"),
            Self::Forbidden(_) => ("/problems/forbidden", "Not allowed"),
            Self::NotFound(_) => ("/problems/not-found", "Not found"),
            Self::MethodNotAllowed => ("/problems/method-not-allowed", "Method not allowed"),
            Self::Conflict(_) => ("/problems/conflict", "Conflict"),
            Self::TooManyRequests { .. } => ("/problems/too-many-requests", "Too many requests"),
            Self::Unavailable(_) => UNAVAILABLE,
            Self::Database { source, .. } if is_unavailable(source) => UNAVAILABLE,
            Self::Database { .. } | Self::Internal(_) => ("/problems/internal", "Internal error"),
        }
    }

    /// What went wrong, for a person to act on. Database and internal causes are logged here,
    /// with their chain, and answered opaquely: nothing internal leaks. Called once per answer,
    /// so each cause is logged once.
    fn detail(&self) -> String {
        match self {
            Self::Validation(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            Self::UnsupportedMediaType => {
                "the request body must be JSON with `Content-Type: application/json`".into()
            }
            Self::PayloadTooLarge { limit } => format!("request bodies are limited to {limit} bytes"),
            Self::Unauthorized(why) => (*why).to_string(),
            Self::MethodNotAllowed => "this address does not accept that HTTP method".into(),
            Self::MalformedJson(why)
            | Self::Forbidden(why)
            | Self::NotFound(why)
            | Self::Conflict(why)
            | Self::TooManyRequests { detail: why, .. }
            | Self::Unavailable(why) => why.clone(),
            Self::Database { source, at } if is_unavailable(source) => {
                tracing::warn!(error = %source, %at, "database unavailable");
                "the database cannot be reached right now; try again in a few seconds".into()
            }
            Self::Database { source, at } => {
                tracing::error!(error = ?source, %at, "database error");
                INTERNAL_DETAIL.into()
            }
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                INTERNAL_DETAIL.into()
            }
        }
    }

    /// The headers some answers need besides the body: how to authenticate (401), when to
    /// come back (429 with the limiter's wait; 503 a few seconds, as a database outage or
    /// shutdown usually lasts).
    fn add_headers(&self, status: StatusCode, headers: &mut HeaderMap) {
        match self {
            Self::Unauthorized(_) => {
                headers
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sondakika\""));
            }
            Self::TooManyRequests { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Unavailable(_) | Self::Database { .. } if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A problem+json body for an error answered outside a handler (by a layer, by hyper, by the
/// accept loop), where there is no [`ApiError`] to describe it: typed by its status.
pub fn problem_for_status(status: StatusCode, detail: impl Into<String>) -> Vec<u8> {
    let (kind, title) = match status {
        StatusCode::BAD_REQUEST => ("/problems/bad-request", "Bad request"),
        StatusCode::NOT_FOUND => ("/problems/not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("/problems/method-not-allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("/problems/request-timeout", "Request timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => ("/problems/payload-too-large", "The request body is too large"),
        StatusCode::URI_TOO_LONG => ("/problems/uri-too-long", "URI too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("/problems/headers-too-large", "Request header fields too large")
        }
        StatusCode::TOO_MANY_REQUESTS => ("/problems/too-many-requests", "Too many requests"),
        StatusCode::SERVICE_UNAVAILABLE => ("/problems/unavailable", "Service temporarily unavailable"),
        // RFC 9457: "about:blank" says the status is all there is to know.
        _ => ("about:blank", status.canonical_reason().unwrap_or("Error")),
    };
    let problem =
        Problem { kind, title, status: status.as_u16(), detail: detail.into(), field: None, errors: None };
    serde_json::to_vec(&problem).expect("problem serialises")
}

/// [`problem_for_status`] as a response.
pub fn problem_response(status: StatusCode, detail: impl Into<String>) -> Response {
    let mut response = (status, problem_for_status(status, detail)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;

    const CATALOGUE: &str = include_str!("../../docs/errors.md");

    /// One error of every variant. The match makes a new variant fail to compile here until it
    /// is listed, and so until its problem type is checked against the catalogue.
    fn every_variant() -> Vec<ApiError> {
        let all = vec![
            ApiError::Validation(vec![FieldError::new("f", "m")]),
            ApiError::MalformedJson("m".into()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Unauthorized("m"),
            ApiError::Forbidden("m".into()),
            ApiError::NotFound("m".into()),
            ApiError::MethodNotAllowed,
            ApiError::Conflict("m".into()),
            ApiError::TooManyRequests { retry_after_secs: 1, detail: "m".into() },
            ApiError::Unavailable("m".into()),
            ApiError::from(sqlx::Error::PoolTimedOut),
            ApiError::from(sqlx::Error::RowNotFound),
            ApiError::from(anyhow::anyhow!("m")),
        ];
        for e in &all {
            match e {
                ApiError::Validation(_)
                | ApiError::MalformedJson(_)
                | ApiError::UnsupportedMediaType
                | ApiError::PayloadTooLarge { .. }
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed
                | ApiError::Conflict(_)
                | ApiError::TooManyRequests { .. }
                | ApiError::Unavailable(_)
                | ApiError::Database { .. }
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    /// Every `/problems/…` written anywhere in `src/`.
    fn types_in_source(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                types_in_source(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("/problems/") {
                    let rest = &text[i + "/problems/".len()..];
                    let name: String =
                        rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
                    // The prefix alone (in prose, like this comment's) names no type.
                    if !name.is_empty() && !name.ends_with('-') {
                        found.insert(format!("/problems/{name}"));
                    }
                }
            }
        }
    }

    #[test]
    fn every_problem_type_the_service_answers_is_in_the_catalogue() {
        let documented: BTreeSet<&str> =
            CATALOGUE.lines().filter_map(|l| l.strip_prefix("## `")?.strip_suffix('`')).collect();
        let mut answered: BTreeSet<String> = every_variant().iter().map(|e| e.kind().0.to_string()).collect();
        for status in 400..=599 {
            let status = StatusCode::from_u16(status).unwrap();
            let problem: serde_json::Value =
                serde_json::from_slice(&problem_for_status(status, "d")).unwrap();
            answered.insert(problem["type"].as_str().unwrap().to_string());
        }
        types_in_source(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut answered);
        assert!(answered.len() >= 16, "the types were found: {answered:?}");
        let missing: Vec<&String> = answered.iter().filter(|t| !documented.contains(t.as_str())).collect();
        assert!(missing.is_empty(), "docs/errors.md lacks {missing:?} (it has {documented:?})");
        let stale: Vec<&&str> = documented.iter().filter(|t| !answered.contains(**t)).collect();
        assert!(stale.is_empty(), "docs/errors.md lists types the service never answers: {stale:?}");
    }

    #[test]
    fn a_500_is_logged_with_the_place_that_met_the_error() {
        fn store_call() -> Result<(), sqlx::Error> {
            Err(sqlx::Error::RowNotFound)
        }
        fn handler() -> ApiResult<()> {
            store_call()?;
            Ok(())
        }
        let line = line!() - 3;
        let ApiError::Database { at, .. } = handler().unwrap_err() else { panic!("a database error") };
        assert_eq!((at.file(), at.line()), (file!(), line), "the `?` in the handler");

        let fn_line = line!() + 2;
        fn internal() -> ApiResult<()> {
            Err(anyhow::anyhow!("broken"))?
        }
        let ApiError::Internal(e) = internal().unwrap_err() else { panic!("an internal error") };
        let chain = format!("{e:#}");
        assert!(chain.contains(&format!("{}:{fn_line}", file!())), "{chain}");
    }
}
