//! One worker of a push-service origin: owns one connection, takes pushes from the origin's
//! queue while its connection has room (one request for HTTP/1.1, its share of the origin's
//! concurrency as HTTP/2 streams), and drives the connection and its requests in this one task,
//! so an answer wakes nothing but this task. Ends after [`IDLE`] without work, closing the
//! connection before push services close it on us (a request on a connection the server has
//! just closed would fail).

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::Poll,
    time::Duration,
};

use futures_util::{StreamExt, future::Either, stream::FuturesUnordered};
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::BodyExt;

use super::{
    Attempt, HTTP1, HTTP2, Origin, Push, Shared,
    answer::{classify, parse_retry_after},
    connect::{Body, Conn, H2_DATA_FRAME, SendRequest},
};

/// Most bytes of a push service's answer we read (error texts are short).
const MAX_ANSWER_BYTES: usize = 4096;
/// A worker with nothing to do for this long closes its connection and ends.
const IDLE: Duration = Duration::from_secs(30);
/// How often a paused origin's worker looks for queued pushes that must not wait (see [`sweep`]).
const SWEEP_EVERY: Duration = Duration::from_millis(250);
const USER_AGENT: HeaderValue = HeaderValue::from_static(concat!("sondakika/", env!("CARGO_PKG_VERSION")));

/// A push at the end of one try.
struct Done {
    push: Box<dyn Push>,
    attempt: Option<Attempt>,
    /// The connection (by [`Conn::id`]) that must not carry another request: an HTTP/1.1
    /// exchange cut short, a broken connection. By id, so that a late answer from a connection
    /// already replaced does not close its successor.
    spoiled: Option<u64>,
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

enum Wake {
    Done(Done),
    Closed,
    Work,
    Timer,
}

pub(super) async fn run(shared: Arc<Shared>, origin: Arc<Origin>) {
    let mut conn: Option<Conn> = None;
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    loop {
        // Start queued pushes while the connection has room.
        while in_flight.len() < room(&shared, &conn) && origin.pause_left().is_none() {
            let Some(push) = origin.pop() else { break };
            match start(&shared, &origin, &mut conn, push).await {
                Ok(request) => in_flight.push(request),
                Err(done) => settle(&shared, &origin, &mut conn, done),
            }
        }
        // Down or paused since the last answer: what is queued must not wait for it.
        sweep(&shared, &origin);
        let pause = origin.pause_left();
        let has_room = in_flight.len() < room(&shared, &conn) && pause.is_none();
        let notified = origin.notify.notified();
        let mut notified = std::pin::pin!(notified);
        if has_room {
            // Registered before looking at the queue, so a push queued after the look wakes us.
            notified.as_mut().enable();
            if origin.has_queued() {
                continue;
            }
        }
        // A timer only when there is something to time: the end of a pause, or idleness.
        let mut timer = match pause {
            // At least every SWEEP_EVERY during a pause, to let go of what must not wait for it.
            Some(p) => Some(Box::pin(tokio::time::sleep(p.min(SWEEP_EVERY)))),
            None if in_flight.is_empty() => Some(Box::pin(tokio::time::sleep(IDLE))),
            None => None,
        };
        if has_room {
            origin.waiting.fetch_add(1, Ordering::AcqRel);
        }
        let wake = poll_fn(|cx| {
            if let Some(c) = conn.as_mut()
                && c.driver.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wake::Closed);
            }
            if !in_flight.is_empty()
                && let Poll::Ready(Some(done)) = in_flight.poll_next_unpin(cx)
            {
                return Poll::Ready(Wake::Done(done));
            }
            if has_room && notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Work);
            }
            if let Some(t) = timer.as_mut()
                && t.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await;
        if has_room {
            origin.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        match wake {
            // Requests still on it fail and come back as done.
            Wake::Closed => conn = None,
            Wake::Done(done) => settle(&shared, &origin, &mut conn, done),
            Wake::Work => {}
            Wake::Timer if pause.is_some() => sweep(&shared, &origin),
            Wake::Timer => {
                if in_flight.is_empty() && !origin.has_queued() {
                    origin.workers.fetch_sub(1, Ordering::AcqRel);
                    // A push queued as we left may have counted on us: take it back if we can.
                    if origin.has_queued() && origin.add_worker(&shared) {
                        continue;
                    }
                    return;
                }
            }
        }
    }
}

/// While the origin is paused (429) or down, hands its queued pushes back at once as deferred
/// (or ends those that must not go any more: retracted, expired, shutting down), so that a
/// `Retry-After` of minutes or an unreachable push service holds no in-flight permit, no fan-out
/// range, no retraction's log and no shutdown.
fn sweep(shared: &Shared, origin: &Origin) {
    let Some(wait) = origin.down_left().or_else(|| origin.pause_left()) else { return };
    let queued: Vec<Box<dyn Push>> = origin.queue.lock().expect("push queue").drain(..).collect();
    for push in queued {
        let attempt = push.headers().map(|_| deferred(origin, wait));
        origin.finish(shared, push, attempt);
    }
}

fn deferred(origin: &Origin, after: std::time::Duration) -> Attempt {
    Attempt::Deferred { after, error: format!("{} is unreachable or asked us to wait", origin.host) }
}

fn room(shared: &Shared, conn: &Option<Conn>) -> usize {
    shared.room(matches!(conn, Some(Conn { send: SendRequest::H2(_), .. })))
}

fn settle(shared: &Shared, origin: &Origin, conn: &mut Option<Conn>, done: Done) {
    if done.spoiled.is_some() && conn.as_ref().map(|c| c.id) == done.spoiled {
        *conn = None;
    }
    if let Some(attempt) = &done.attempt {
        origin.observe(attempt);
    }
    origin.finish(shared, done.push, done.attempt);
}

/// Puts one push on the wire, connecting first if needed; `Err` when it ended at once.
async fn start(
    shared: &Shared,
    origin: &Arc<Origin>,
    conn: &mut Option<Conn>,
    push: Box<dyn Push>,
) -> Result<InFlight, Done> {
    let ended = |push, attempt| Err(Done { push, attempt: Some(attempt), spoiled: None });
    if origin.is_blocked() {
        let error =
            format!("not sent: {} rejected our VAPID credentials; fix the VAPID settings", origin.host);
        return ended(push, Attempt::Failed { status: None, error });
    }
    let Some(headers) = push.headers() else {
        return Err(Done { push, attempt: None, spoiled: None });
    };
    if let Some(wait) = origin.down_left() {
        return ended(push, deferred(origin, wait));
    }
    let Some(place) = &origin.place else {
        let error = format!("{} is not a push service origin", origin.host);
        return ended(push, Attempt::Failed { status: None, error });
    };
    let authorization = match shared.vapid.authorization(&origin.name) {
        Ok(a) => a,
        Err(e) => {
            let error = format!("signing the VAPID token failed: {e}");
            return ended(push, Attempt::Failed { status: None, error });
        }
    };
    let uri: Uri = match push.endpoint().parse() {
        Ok(u) => u,
        Err(_) => {
            let error = format!("an endpoint at {} is not a valid URL", origin.host);
            return ended(push, Attempt::Failed { status: None, error });
        }
    };
    // A connection that takes a request: the one we have once its previous exchange is over,
    // or a new one (once more if the one we had turns out closed).
    for fresh in [false, true] {
        if conn.is_none() {
            match shared.connector.connect(place).await {
                Ok(c) => {
                    let h2 = matches!(c.send, SendRequest::H2(_));
                    origin.protocol.store(if h2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
                    *conn = Some(c);
                }
                Err(error) => {
                    return Err(Done {
                        push,
                        attempt: Some(Attempt::Retry { status: None, after: None, error }),
                        spoiled: None,
                    });
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        if ready(c).await {
            break;
        }
        *conn = None;
        if fresh {
            let error = format!("connection error talking to {}", origin.host);
            return Err(Done {
                push,
                attempt: Some(Attempt::Retry { status: None, after: None, error }),
                spoiled: None,
            });
        }
    }
    let c = conn.as_mut().expect("connected above");
    let h2 = matches!(c.send, SendRequest::H2(_));
    // An HTTP/1.1 exchange cut short or failed spoils its connection; an HTTP/2 stream is reset
    // alone (a broken HTTP/2 connection ends its driver, which the worker sees).
    let spoiled_if_h1 = (!h2).then_some(c.id);

    let body = push.body();
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    if h2 {
        *request.uri_mut() = uri;
    } else {
        // HTTP/1.1 wants the path in the request line and the authority in `Host`.
        *request.uri_mut() =
            uri.path_and_query().cloned().map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
        request.headers_mut().insert(header::HOST, place.authority.clone());
    }
    let h = request.headers_mut();
    h.insert("ttl", HeaderValue::from(headers.ttl));
    h.insert("urgency", HeaderValue::from_static(headers.urgency));
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(topic) = headers.topic {
        h.insert("topic", topic);
    }
    h.insert(header::AUTHORIZATION, authorization);
    h.insert(header::USER_AGENT, USER_AGENT);

    let response = match &mut c.send {
        SendRequest::H1(s) => Either::Left(s.send_request(request.map(|()| Body::new(body)))),
        SendRequest::H2(s) => {
            // The body goes with the headers: h2 holds it until the flow-control windows open.
            // In frames small enough for h2 to gather many pushes into one write.
            let sent = s.send_request(request, false).and_then(|(response, mut stream)| {
                let mut body = body;
                while body.len() > H2_DATA_FRAME {
                    stream.send_data(body.split_to(H2_DATA_FRAME), false)?;
                }
                stream.send_data(body, true)?;
                Ok(response)
            });
            match sent {
                Ok(response) => Either::Right(response),
                Err(e) => {
                    // A refused stream leaves the connection usable; a broken one ends its
                    // driver, which the worker sees.
                    let error = format!("request error talking to {}: {}", origin.host, h2_reason(&e));
                    return Err(Done {
                        push,
                        attempt: Some(Attempt::Retry { status: None, after: None, error }),
                        spoiled: None,
                    });
                }
            }
        }
    };
    let timeout = shared.timeout;
    let origin = origin.clone();
    Ok(Box::pin(async move {
        let exchange = async {
            Ok(match response {
                Either::Left(response) => read_h1_answer(response.await.map_err(drop)?).await,
                Either::Right(response) => read_h2_answer(response.await.map_err(drop)?).await,
            })
        };
        // Not given up when the alert is retracted meanwhile: the request is out, so the push
        // may reach the device, and only its answer tells whether the retraction must follow
        // it there. The timeout bounds the wait.
        let result = tokio::time::timeout(timeout, exchange).await;
        let retry = |kind: &str| Attempt::Retry {
            status: None,
            after: None,
            error: format!("{kind} error talking to {}", origin.host),
        };
        match result {
            // Timeouts and refused connections are normal weather on the internet.
            Err(_) => Done { push, attempt: Some(retry("timeout")), spoiled: spoiled_if_h1 },
            Ok(Err(())) => Done { push, attempt: Some(retry("request")), spoiled: spoiled_if_h1 },
            Ok(Ok(answer)) => Done {
                push,
                attempt: Some(classify(answer.status, answer.retry_after, &answer.text)),
                spoiled: if answer.complete { None } else { spoiled_if_h1 },
            },
        }
    }))
}

/// Waits until the connection takes a request, driving it meanwhile (an HTTP/1.1 connection
/// becomes ready once the previous answer is read to its end). False if it closed.
async fn ready(c: &mut Conn) -> bool {
    poll_fn(|cx| {
        // An HTTP/2 connection that takes a stream is not driven first: requests started
        // back to back then leave in one write when the worker next polls the driver.
        if let SendRequest::H2(s) = &mut c.send
            && let Poll::Ready(r) = s.poll_ready(cx)
        {
            return Poll::Ready(r.is_ok());
        }
        if c.driver.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        match &mut c.send {
            SendRequest::H1(s) => s.poll_ready(cx).map(|r| r.is_ok()),
            // Pending while the push service's stream limit holds back a stream we opened.
            SendRequest::H2(s) => s.poll_ready(cx).map(|r| r.is_ok()),
        }
    })
    .await
}

struct Answer {
    status: http::StatusCode,
    retry_after: Option<Duration>,
    text: String,
    /// Whether the whole body was read (else the connection is not reused).
    complete: bool,
}

async fn read_h1_answer(response: http::Response<hyper::body::Incoming>) -> Answer {
    let (head, mut body) = response.into_parts();
    let mut text = AnswerText::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            text.complete = false;
            break;
        };
        if let Ok(data) = frame.into_data()
            && !text.take(&data)
        {
            break;
        }
    }
    text.answer(&head)
}

async fn read_h2_answer(response: http::Response<h2::RecvStream>) -> Answer {
    let (head, mut body) = response.into_parts();
    let mut text = AnswerText::default();
    while let Some(data) = body.data().await {
        let Ok(data) = data else {
            text.complete = false;
            break;
        };
        // Give the window back, or a long answer would stall the connection.
        let _ = body.flow_control().release_capacity(data.len());
        if !text.take(&data) {
            break;
        }
    }
    text.answer(&head)
}

/// The first [`MAX_ANSWER_BYTES`] of an answer's body.
struct AnswerText {
    buf: Vec<u8>,
    complete: bool,
}

impl Default for AnswerText {
    fn default() -> Self {
        Self { buf: Vec::new(), complete: true }
    }
}

impl AnswerText {
    /// Keeps what fits; false when the rest of the body will not be read.
    fn take(&mut self, data: &[u8]) -> bool {
        let room = MAX_ANSWER_BYTES.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() > room {
            self.complete = false; // the rest is not read: the connection is closed instead
            return false;
        }
        true
    }

    fn answer(self, head: &http::response::Parts) -> Answer {
        let retry_after =
            head.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        Answer {
            status: head.status,
            retry_after,
            text: String::from_utf8_lossy(&self.buf).into_owned(),
            complete: self.complete,
        }
    }
}

/// An HTTP/2 error for the log: the stream or connection error code, never the endpoint.
fn h2_reason(e: &h2::Error) -> String {
    match e.reason() {
        Some(reason) => format!("HTTP/2 {reason:?}"),
        None if e.is_io() => "connection closed".to_string(),
        None => "HTTP/2 error".to_string(),
    }
}
