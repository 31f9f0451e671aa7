//! Request extractors whose rejections are our problem+json errors, naming the field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::validation::{Lines, check_text};

/// JSON body: requires `application/json`, a body within the limit, valid JSON, known fields and
/// the right types. Errors say which field and why.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(64 * 1024, |l| l.0);
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_error(e, limit))?;
        parse(&bytes).map(Json)
    }
}

/// Like [`Json`], but an empty body means `T::default()` (for bodies that are optional).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(64 * 1024, |l| l.0);
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_error(e, limit))?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if has_type && !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// The body limit in force, put in the request extensions by the router so errors can say it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::MalformedJson(format!("the request body could not be read: {e}"))
    }
}

/// Parses a JSON object body, turning serde's message into one that names the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::MalformedJson(format!("{} (line {}, column {})", describe(&e), e.line(), e.column()))
    })?;
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object, e.g. {\"headline\": \"...\"}"));
    }
    serde_path_to_error::deserialize(&value).map_err(|err| {
        let path = err.path().to_string();
        let message = describe(err.inner());
        // serde_path_to_error's path already ends at the offending (or unknown) field.
        let field = if path == "." { unknown_field(&message).unwrap_or("body").to_string() } else { path };
        ApiError::field(&named(field, "body"), message)
    })
}

/// serde's message without its " at line X column Y" tail.
fn describe(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A path whose last key is empty (`{"": 1}` gives ``, `{"keys": {"": 1}}` gives `keys.`) names
/// nothing a person could find: then the object holding that key is at fault (`whole` at the top).
fn named(path: String, whole: &str) -> String {
    if path.is_empty() {
        whole.to_string()
    } else if let Some(parent) = path.strip_suffix('.') {
        named(parent.to_string(), whole)
    } else {
        path
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

/// A path or query value that failed to parse becomes a 404/422 of ours, not axum's text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::NotFound(format!("no such resource: {}", parts.uri.path())))
    }
}

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded_de(query);
        de.map(Query)
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    // Query strings are flat: decode to pairs, then to T through serde_json values so that the
    // error names the parameter.
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        // The same byte-level gate as bodies (an empty value is allowed: `topics=` means all).
        if !v.is_empty() {
            check_text(&named(k.to_string(), "query"), &v, Lines::Single)
                .map_err(|e| ApiError::Validation(vec![e]))?;
        }
        map.insert(k.into_owned(), serde_json::Value::String(v.into_owned()));
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let field = unknown_field(&inner).map(str::to_string).unwrap_or(path);
        ApiError::field(&named(field, "query"), format!("query parameter: {inner}"))
    })
}

/// A `limit` query parameter: a whole number from 1 to `max`, `default` when absent.
pub fn limit(value: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("must be a whole number from 1 to {max}"))),
    }
}
