//! A real HTTP server the tests control: what a newsroom's CMS (feeds) or any other site the
//! service fetches from looks like. Each path answers as its [`Route`] says; every request is
//! recorded with its headers and the time it arrived.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};

#[derive(Clone)]
#[allow(dead_code)] // each test file uses the routes it needs
pub enum Route {
    /// A document; with an ETag and/or Last-Modified, conditional requests get 304.
    Doc {
        content_type: &'static str,
        body: Bytes,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// 302 to this location.
    Redirect(String),
    /// `bytes` of filler, streamed; with or without a Content-Length.
    Huge {
        bytes: usize,
        content_length: bool,
    },
    /// Headers at once, then the body never finishes.
    Slow,
    Status(u16),
    /// This status with this body (a receiver's error answer).
    Answer {
        status: u16,
        body: Bytes,
    },
    /// A document answered only after `after`: a poll held in flight for that long.
    Late {
        after: Duration,
        content_type: &'static str,
        body: Bytes,
    },
}

#[allow(dead_code)]
impl Route {
    pub fn doc(content_type: &'static str, body: impl Into<String>) -> Self {
        Route::Doc { content_type, body: Bytes::from(body.into()), etag: None, last_modified: None }
    }
    pub fn with_etag(content_type: &'static str, body: impl Into<String>, etag: &str) -> Self {
        Route::Doc {
            content_type,
            body: Bytes::from(body.into()),
            etag: Some(etag.into()),
            last_modified: Some("Sun, 29 Nov 2026 09:00:00 GMT".into()),
        }
    }
}

#[derive(Clone, Default)]
struct Shared {
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

struct Hit {
    path: String,
    headers: HeaderMap,
    at: DateTime<Utc>,
}

pub struct Origin {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Origin {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = shared.clone();
        let app = axum::Router::new().fallback(move |req: Request| answer(s.clone(), req));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The same place under the name `localhost`.
    pub fn named_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    pub fn set(&self, path: &str, route: Route) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), route);
    }

    /// Requests so far for `path`, with their headers.
    pub fn hits(&self, path: &str) -> Vec<HeaderMap> {
        self.shared
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .map(|h| h.headers.clone())
            .collect()
    }

    /// When the requests for `path` that arrived after `since` arrived.
    #[allow(dead_code)] // the feed tests use it
    pub fn hit_times(&self, path: &str, since: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.shared
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path && h.at > since)
            .map(|h| h.at)
            .collect()
    }
}

async fn answer(shared: Shared, req: Request) -> Response {
    let path = req.uri().path().to_string();
    shared.hits.lock().unwrap().push(Hit {
        path: path.clone(),
        headers: req.headers().clone(),
        at: Utc::now(),
    });
    let route = shared.routes.lock().unwrap().get(&path).cloned();
    match route {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Route::Status(s)) => StatusCode::from_u16(s).unwrap().into_response(),
        Some(Route::Answer { status, body }) => (StatusCode::from_u16(status).unwrap(), body).into_response(),
        Some(Route::Redirect(to)) => {
            (StatusCode::FOUND, [(header::LOCATION, HeaderValue::from_str(&to).unwrap())]).into_response()
        }
        Some(Route::Doc { content_type, body, etag, last_modified }) => {
            let h = req.headers();
            let fresh = etag.as_deref().is_some_and(|e| h.get(header::IF_NONE_MATCH).is_some_and(|v| v == e))
                || (etag.is_none()
                    && last_modified
                        .as_deref()
                        .is_some_and(|l| h.get(header::IF_MODIFIED_SINCE).is_some_and(|v| v == l)));
            let mut r = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                ([(header::CONTENT_TYPE, content_type)], body).into_response()
            };
            if let Some(e) = etag {
                r.headers_mut().insert(header::ETAG, HeaderValue::from_str(&e).unwrap());
            }
            if let Some(l) = last_modified {
                r.headers_mut().insert(header::LAST_MODIFIED, HeaderValue::from_str(&l).unwrap());
            }
            r
        }
        Some(Route::Huge { bytes, content_length }) => {
            let chunk = Bytes::from(vec![b'<'; 64 * 1024]);
            let n = bytes.div_ceil(chunk.len());
            let stream =
                futures_util::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/rss+xml"));
            if content_length {
                r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n * 64 * 1024));
            }
            r
        }
        Some(Route::Late { after, content_type, body }) => {
            tokio::time::sleep(after).await;
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Some(Route::Slow) => {
            let stream = futures_util::stream::unfold(0u32, |i| async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"<rss>")), i + 1))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/rss+xml"));
            r
        }
    }
}
