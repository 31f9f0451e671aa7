//! What every request on the main port passes through around the handlers: the bound on
//! `X-Request-Id`, the bound on URI length, and problem+json for every error answer, whoever
//! made it (a handler, a fallback, the timeout layer, a body-limit rejection).
//!
//! Errors hyper answers before any of this runs are in `server::parse_errors`.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::Response,
};

use super::error::{problem_for_status, problem_response};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` kept from a client.
pub const MAX_REQUEST_ID: usize = 64;

/// Longest URI served (as nginx's default `large_client_header_buffers`); 414 beyond.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// A client's request id goes into every log line and back into the answer, so it is kept only
/// when it is one short token of characters that are safe in any log format (UUIDs, ULIDs,
/// base64); otherwise it is removed and `SetRequestIdLayer` gives the request a fresh UUID.
pub async fn bound_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(X_REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

fn is_safe_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// Refuses URIs longer than [`MAX_URI_BYTES`] with 414 (hyper itself allows 64 KiB).
pub async fn bound_uri(request: Request) -> Result<Request, Response> {
    let length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if length > MAX_URI_BYTES {
        return Err(problem_response(
            StatusCode::URI_TOO_LONG,
            format!("the request's URI is {length} bytes long; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    Ok(request)
}

/// Gives every error answer that is not problem+json yet (the timeout layer's 408 and axum's
/// own rejections have an empty or plain-text body) a problem+json body for its status,
/// keeping its other headers (`Retry-After`, `Allow`, CORS, the request id).
pub async fn problem_json_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::REQUEST_TIMEOUT => {
            "the request was not completed within the server's time limit; retry".into()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this server accepts".into(),
        StatusCode::METHOD_NOT_ALLOWED => "this address does not accept that HTTP method".into(),
        status => format!("the request failed with {status}"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    Response::from_parts(parts, Body::from(problem_for_status(status, detail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_safe_tokens() {
        assert!(is_safe_request_id(b"5f0c7a52-3c1e-4a52-9f7e-0d4c2b1a9e33"));
        assert!(is_safe_request_id(b"01HZX3K5:abc_DEF.9+/="));
        assert!(!is_safe_request_id(b""));
        assert!(!is_safe_request_id(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!is_safe_request_id(b"a b"));
        assert!(!is_safe_request_id(b"a\"b"));
        assert!(!is_safe_request_id("ş".as_bytes()));
    }
}
