//! The browser pieces, served by the binary itself (embedded at build time; no Node.js or
//! front-end build step to run the service):
//!
//! - `/`: a demo reader page with the sample article, the ticker widget and the alerts button;
//! - `/embed/sondakika.js`: the one script tag a news site adds;
//! - `/sw.js`: the service worker that shows notifications;
//! - `/console`: the editor console;
//! - `/assets/icon.svg`, `/assets/icon-192.png`, `/assets/badge-96.png`: the icon, and the PNGs
//!   the service worker puts on notifications (rendered once from the SVG by
//!   `scripts/render-icons.mjs`: a PNG is what every platform's notifications show).

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::app::AppState;

/// The embedded assets, by path under `assets/`.
const ASSETS: &[(&str, &str)] = &[
    ("sw.js", include_str!("../assets/sw.js")),
    ("embed/sondakika.js", include_str!("../assets/embed/sondakika.js")),
    ("demo/index.html", include_str!("../assets/demo/index.html")),
    ("demo/article.txt", include_str!("../assets/demo/article.txt")),
    ("console/index.html", include_str!("../assets/console/index.html")),
    ("console/console.js", include_str!("../assets/console/console.js")),
    ("console/console.css", include_str!("../assets/console/console.css")),
    ("console/feeds.js", include_str!("../assets/console/feeds.js")),
    ("icon.svg", include_str!("../assets/icon.svg")),
];

/// The embedded binary assets (the notification images), by path under `assets/`.
const BINARY_ASSETS: &[(&str, &[u8])] = &[
    ("icon-192.png", include_bytes!("../assets/icon-192.png")),
    ("badge-96.png", include_bytes!("../assets/badge-96.png")),
];

/// An asset's text: embedded, or read from `dev_assets_dir` when set.
fn load(state: &AppState, name: &str) -> String {
    if let Some(dir) = &state.settings.dev_assets_dir
        && let Ok(text) = std::fs::read_to_string(dir.join(name))
    {
        return text;
    }
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, t)| t.to_string()).unwrap_or_default()
}

/// A binary asset's bytes: embedded, or read from `dev_assets_dir` when set.
fn load_bytes(state: &AppState, name: &str) -> Bytes {
    if let Some(dir) = &state.settings.dev_assets_dir
        && let Ok(bytes) = std::fs::read(dir.join(name))
    {
        return bytes.into();
    }
    BINARY_ASSETS.iter().find(|(n, _)| *n == name).map(|(_, b)| Bytes::from_static(b)).unwrap_or_default()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(demo))
        .route("/sw.js", get(service_worker))
        .route(
            "/embed/sondakika.js",
            get(|State(s): State<AppState>| async move {
                script(load(&s, "embed/sondakika.js"), "public, max-age=300", true)
            }),
        )
        .route(
            "/console",
            get(|State(s): State<AppState>| async move { page(load(&s, "console/index.html")) }),
        )
        .route(
            "/console/console.js",
            get(|State(s): State<AppState>| async move {
                script(load(&s, "console/console.js"), "no-cache", false)
            }),
        )
        .route(
            "/console/feeds.js",
            get(|State(s): State<AppState>| async move {
                script(load(&s, "console/feeds.js"), "no-cache", false)
            }),
        )
        .route(
            "/console/console.css",
            get(|State(s): State<AppState>| async move {
                asset(load(&s, "console/console.css"), "text/css; charset=utf-8")
            }),
        )
        .route(
            "/assets/icon.svg",
            get(|State(s): State<AppState>| async move { asset(load(&s, "icon.svg"), "image/svg+xml") }),
        )
        .route(
            "/assets/icon-192.png",
            get(|State(s): State<AppState>| async move { png(load_bytes(&s, "icon-192.png")) }),
        )
        .route(
            "/assets/badge-96.png",
            get(|State(s): State<AppState>| async move { png(load_bytes(&s, "badge-96.png")) }),
        )
}

fn with_headers(body: String, content_type: &'static str, cache: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn script(body: String, cache: &'static str, cross_origin: bool) -> Response {
    let mut r = with_headers(body, "text/javascript; charset=utf-8", cache);
    if cross_origin {
        // The embed script is loaded by news sites from other origins.
        r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    r
}

fn asset(body: String, content_type: &'static str) -> Response {
    with_headers(body, content_type, "public, max-age=3600")
}

/// A notification image. Cross-origin readable: a news site's service worker (another origin)
/// names it as its notifications' icon, and some platforms fetch that from the worker.
fn png(body: Bytes) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn page(html: String) -> Response {
    let mut r = Html(html).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("strict-origin-when-cross-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
        ),
    );
    r
}

/// The service worker, told where this server is and how many receipts to send. Served with the
/// headers a worker needs: always revalidated, allowed to control the whole origin.
async fn service_worker(State(state): State<AppState>) -> Response {
    let config = serde_json::json!({
        "server": state.settings.public_url().as_str().trim_end_matches('/'),
        "receiptSampleRate": state.settings.receipt_sample_rate,
    });
    let body =
        format!("self.SONDAKIKA_CONFIG = self.SONDAKIKA_CONFIG || {config};\n{}", load(&state, "sw.js"));
    let mut r = with_headers(body, "text/javascript; charset=utf-8", "no-cache");
    r.headers_mut().insert("service-worker-allowed", HeaderValue::from_static("/"));
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The sample article as HTML: title, then paragraphs (the scraped page's noise dropped).
fn article_html(article: &str) -> (String, String) {
    let lines: Vec<&str> = article.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let title = lines.get(2).copied().unwrap_or("Son dakika").to_string();
    let mut html = String::new();
    let mut after_update_label = false;
    for line in lines.iter().skip(3) {
        if line.starts_with("Son Güncelleme") {
            after_update_label = true;
            continue;
        }
        if line.starts_with("-----") || *line == title {
            continue;
        }
        if std::mem::take(&mut after_update_label) {
            html.push_str(&format!(
                "<p class=\"article-date\">Son güncelleme: <time>{}</time></p>\n",
                escape(line)
            ));
        } else if line.chars().count() < 90 && !line.ends_with('.') {
            html.push_str(&format!("<h2>{}</h2>\n", escape(line)));
        } else {
            html.push_str(&format!("<p>{}</p>\n", escape(line)));
        }
    }
    (title, html)
}

async fn demo(State(state): State<AppState>) -> Response {
    let (title, body) = article_html(&load(&state, "demo/article.txt"));
    let server = state.settings.public_url().as_str().trim_end_matches('/').to_string();
    let html = load(&state, "demo/index.html")
        .replace("{{TITLE}}", &escape(&title))
        .replace("{{ARTICLE}}", &body)
        .replace("{{SERVER}}", &escape(&server));
    page(html)
}
