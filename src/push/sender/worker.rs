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

use bytes::Bytes;
use futures_util::{StreamExt, future::Either, stream::FuturesUnordered};
use h2::client::ResponseFuture;
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    HTTP1, HTTP2, Headers, Origin, Push, SendResult, Shared,
    answer::{classify, parse_retry_after},
    connect::{Body, Conn, H2_DATA_FRAME, Place, SendRequest},
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
    attempt: Option<SendResult>,
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

fn deferred(origin: &Origin, after: std::time::Duration) -> SendResult {
    SendResult::Deferred { after, error: format!("{} is unreachable or asked us to wait", origin.host) }
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

/// Puts one push on the wire, connecting first if needed; `Err` when it ended at once. Four
/// steps: what the push needs before it may go ([`prepare`]), a connection that takes a
/// request ([`ready_connection`]), the request on the wire ([`request_head`], [`send`]), and
/// the answer awaited apart from this task's other work ([`await_answer`]).
async fn start(
    shared: &Shared,
    origin: &Arc<Origin>,
    conn: &mut Option<Conn>,
    push: Box<dyn Push>,
) -> Result<InFlight, Done> {
    let ended = |push, attempt| Err(Done { push, attempt, spoiled: None });
    let outgoing = match prepare(shared, origin, push.as_ref()) {
        Ok(outgoing) => outgoing,
        Err(attempt) => return ended(push, attempt),
    };
    let c = match ready_connection(shared, origin, conn, outgoing.place).await {
        Ok(c) => c,
        Err(attempt) => return ended(push, Some(attempt)),
    };
    let h2 = matches!(c.send, SendRequest::H2(_));
    // An HTTP/1.1 exchange cut short or failed spoils its connection; an HTTP/2 stream is reset
    // alone (a broken HTTP/2 connection ends its driver, which the worker sees).
    let spoiled_if_h1 = (!h2).then_some(c.id);
    let body = push.body();
    let request = request_head(outgoing, h2, body.len());
    let response = match send(c, request, body) {
        Ok(response) => response,
        Err(e) => {
            // A refused stream leaves the connection usable; a broken one ends its driver,
            // which the worker sees.
            let error = format!("request error talking to {}: {}", origin.host, h2_reason(&e));
            return ended(push, Some(retry(error)));
        }
    };
    Ok(Box::pin(await_answer(response, shared.timeout, push, origin.clone(), spoiled_if_h1)))
}

/// What a push needs before it may take a connection, all known without the network.
struct Outgoing<'a> {
    headers: Headers,
    place: &'a Place,
    authorization: HeaderValue,
    uri: Uri,
}

/// Checks, in this order, that the push may go and can: the origin still accepts our VAPID
/// credentials, the push still wants to go ([`Push::headers`], asked as late as this because a
/// retraction or shutdown may have come meanwhile), the origin is not down, it is a push-service
/// origin, its token signs and the endpoint parses. `Err(None)`: not sent, nothing to record.
fn prepare<'a>(
    shared: &Shared,
    origin: &'a Origin,
    push: &dyn Push,
) -> Result<Outgoing<'a>, Option<SendResult>> {
    if origin.is_blocked() {
        let error =
            format!("not sent: {} rejected our VAPID credentials; fix the VAPID settings", origin.host);
        return Err(Some(failed(error)));
    }
    let Some(headers) = push.headers() else {
        return Err(None);
    };
    if let Some(wait) = origin.down_left() {
        return Err(Some(deferred(origin, wait)));
    }
    let Some(place) = &origin.place else {
        return Err(Some(failed(format!("{} is not a push service origin", origin.host))));
    };
    let authorization = shared
        .vapid
        .authorization(&origin.name)
        .map_err(|e| Some(failed(format!("signing the VAPID token failed: {e}"))))?;
    let uri: Uri = push
        .endpoint()
        .parse()
        .map_err(|_| Some(failed(format!("an endpoint at {} is not a valid URL", origin.host))))?;
    Ok(Outgoing { headers, place, authorization, uri })
}

/// A connection that takes a request: the one we have once its previous exchange is over, or a
/// new one (once more if the one we had turns out closed). A push service we cannot reach is
/// a retry, not a failure: that is normal weather on the internet.
async fn ready_connection<'c>(
    shared: &Shared,
    origin: &Origin,
    conn: &'c mut Option<Conn>,
    place: &Place,
) -> Result<&'c mut Conn, SendResult> {
    let mut second_try = false;
    loop {
        if conn.is_none() {
            let c = shared.connector.connect(place).await.map_err(retry)?;
            let h2 = matches!(c.send, SendRequest::H2(_));
            origin.protocol.store(if h2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
            *conn = Some(c);
        }
        if ready(conn.as_mut().expect("connected above")).await {
            return Ok(conn.as_mut().expect("connected above"));
        }
        *conn = None;
        if second_try {
            return Err(retry(format!("connection error talking to {}", origin.host)));
        }
        second_try = true;
    }
}

/// The request's head: Web Push's headers (RFC 8030: `TTL`, `Urgency`, `Topic`; RFC 8291's
/// content encoding; RFC 8292's VAPID authorization). HTTP/2 takes the full URI; HTTP/1.1 wants
/// the path in the request line and the authority in `Host`.
fn request_head(outgoing: Outgoing<'_>, h2: bool, body_len: usize) -> Request<()> {
    let Outgoing { headers, place, authorization, uri } = outgoing;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    if h2 {
        *request.uri_mut() = uri;
    } else {
        *request.uri_mut() =
            uri.path_and_query().cloned().map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
        request.headers_mut().insert(header::HOST, place.authority.clone());
    }
    let h = request.headers_mut();
    h.insert("ttl", HeaderValue::from(headers.ttl));
    h.insert("urgency", HeaderValue::from_static(headers.urgency));
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("aes128gcm"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Some(topic) = headers.topic {
        h.insert("topic", topic);
    }
    h.insert(header::AUTHORIZATION, authorization);
    h.insert(header::USER_AGENT, USER_AGENT);
    request
}

/// Hands the request and its body to the connection, and returns the answer still to come.
/// Nothing is awaited: over HTTP/2 the frames wait in h2's buffers until the worker next
/// drives the connection, so pushes started back to back leave in one write. `Err` only from
/// HTTP/2 (a refused or broken stream); an HTTP/1.1 failure shows in its answer.
fn send(
    c: &mut Conn,
    request: Request<()>,
    body: Bytes,
) -> Result<Either<impl Future<Output = hyper::Result<Response<Incoming>>> + use<>, ResponseFuture>, h2::Error>
{
    match &mut c.send {
        SendRequest::H1(s) => Ok(Either::Left(s.send_request(request.map(|()| Body::new(body))))),
        SendRequest::H2(s) => {
            // The body goes with the headers: h2 holds it until the flow-control windows open.
            // In frames small enough for h2 to gather many pushes into one write.
            let (response, mut stream) = s.send_request(request, false)?;
            let mut body = body;
            while body.len() > H2_DATA_FRAME {
                stream.send_data(body.split_to(H2_DATA_FRAME), false)?;
            }
            stream.send_data(body, true)?;
            Ok(Either::Right(response))
        }
    }
}

/// Waits for the push service's answer, within the push timeout, and makes it the push's
/// [`Done`]. Runs as one of the worker's in-flight futures, so an answer wakes only the worker.
///
/// Not given up when the alert is retracted meanwhile: the request is out, so the push may
/// reach the device, and only its answer tells whether the retraction must follow it there.
/// The timeout bounds the wait.
async fn await_answer<F>(
    response: Either<F, ResponseFuture>,
    timeout: Duration,
    push: Box<dyn Push>,
    origin: Arc<Origin>,
    spoiled_if_h1: Option<u64>,
) -> Done
where
    F: Future<Output = hyper::Result<Response<Incoming>>>,
{
    let exchange = async {
        Ok(match response {
            Either::Left(response) => read_h1_answer(response.await.map_err(drop)?).await,
            Either::Right(response) => read_h2_answer(response.await.map_err(drop)?).await,
        })
    };
    let result = tokio::time::timeout(timeout, exchange).await;
    let retry = |kind: &str| retry(format!("{kind} error talking to {}", origin.host));
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
}

/// A try that may succeed later, the push service having given no status to go by.
fn retry(error: String) -> SendResult {
    SendResult::Retry { status: None, after: None, error }
}

/// A try that must not be repeated as it is.
fn failed(error: String) -> SendResult {
    SendResult::Failed { status: None, error }
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

async fn read_h1_answer(response: Response<Incoming>) -> Answer {
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

async fn read_h2_answer(response: Response<h2::RecvStream>) -> Answer {
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
