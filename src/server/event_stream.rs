//! Server-Sent Events answers: the tickers' `GET /sse` and the consoles' drafts stream.

use std::convert::Infallible;

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, header},
    response::Response,
};
use futures_util::{Stream, StreamExt};

/// A `text/event-stream` answer whose body is `events`, each already encoded (`event:`, `data:`,
/// a blank line), until the stream ends. Hyper polls it only when the socket can take more.
pub fn response(events: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let mut response = Response::new(Body::from_stream(events.map(Ok::<_, Infallible>)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    // Tells nginx not to buffer this response (the deploy config also turns buffering off).
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
