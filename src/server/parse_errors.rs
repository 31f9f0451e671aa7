//! hyper answers a request it cannot parse by itself, before any service of ours sees it, with
//! a bodiless `400`, `414` or `431`, and offers no hook to change that answer. [`EdgeIo`] wraps
//! each connection's socket and recognises exactly that answer (a status line and nothing but
//! `content-length: 0`, `date` and perhaps `connection: close`, as one write) and writes a problem+json one in its place.
//!
//! Our own error answers always have a body (`edge::problem_json_errors` sees to that), and
//! WebSocket frames and SSE chunks cannot start with a status line, so nothing else matches.
//! One case stays bodiless: a parse error in a pipelined request whose head hyper writes in the
//! same write as the answer before it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::http::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::error::problem_for_status;
use super::limits::ConnectionSlot;

/// hyper's error answers are about 80 bytes; anything longer is not one.
const MAX_HYPER_ERROR_HEAD: usize = 256;

/// A connection's socket, with its place in the connection counts.
pub struct EdgeIo {
    tcp: TcpStream,
    _slot: ConnectionSlot,
    /// Our answer in place of hyper's, and how much of it has been written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl EdgeIo {
    pub fn new(tcp: TcpStream, slot: ConnectionSlot) -> Self {
        Self { tcp, _slot: slot, replacement: None }
    }

    /// Writes the replacement; reports `reported` bytes (hyper's whole answer) written once done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>, reported: usize) -> Poll<io::Result<usize>> {
        let (bytes, written) = self.replacement.as_mut().expect("a replacement is being written");
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(reported))
    }
}

impl AsyncRead for EdgeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for EdgeIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacement.is_none()
            && let Some(ours) = problem_for_hyper_error(buf)
        {
            self.replacement = Some((ours, 0));
        }
        if self.replacement.is_some() {
            return self.poll_replacement(cx, buf.len());
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.replacement.is_none()
            && total <= MAX_HYPER_ERROR_HEAD
            && bufs.iter().find(|b| !b.is_empty()).is_some_and(|b| b.starts_with(b"HTTP/1.1 4"))
        {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(ours) = problem_for_hyper_error(&joined) {
                self.replacement = Some((ours, 0));
            }
        }
        if self.replacement.is_some() {
            return self.poll_replacement(cx, total);
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// If `head` is exactly hyper's own answer to an unparseable request, our answer in its place.
fn problem_for_hyper_error(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_HYPER_ERROR_HEAD || !head.starts_with(b"HTTP/1.1 4") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text[..text.len() - 4].split("\r\n");
    let status_line = lines.next()?;
    let (status, detail) = match status_line {
        "HTTP/1.1 400 Bad Request" => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1 (request line, header syntax or framing)",
        ),
        "HTTP/1.1 414 URI Too Long" => (StatusCode::URI_TOO_LONG, "the request's URI is too long"),
        "HTTP/1.1 431 Request Header Fields Too Large" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too large: at most 64 KiB and 100 fields",
        ),
        _ => return None,
    };
    let mut date = None;
    let mut bodiless = false;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value == "0" => bodiless = true,
            "date" => date = Some(value),
            // When the request was read far enough to know the connection cannot go on.
            "connection" if value == "close" => {}
            _ => return None,
        }
    }
    if !bodiless {
        return None;
    }
    let body = problem_for_status(status, detail);
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(&format!("date: {date}\r\n"));
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_answers_become_problems() {
        for (head, status) in [
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 09:00:00 GMT\r\n\r\n",
                400,
            ),
            ("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n", 414),
            ("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n", 400),
            ("HTTP/1.1 431 Request Header Fields Too Large\r\ndate: x\r\ncontent-length: 0\r\n\r\n", 431),
        ] {
            let ours = String::from_utf8(problem_for_hyper_error(head.as_bytes()).unwrap()).unwrap();
            let (ours_head, body) = ours.split_once("\r\n\r\n").unwrap();
            assert!(ours_head.contains("content-type: application/problem+json"), "{ours}");
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["status"], status);
            assert!(ours_head.contains(&format!("content-length: {}", body.len())));
        }
    }

    #[test]
    fn our_own_answers_are_left_alone() {
        for head in [
            // Ours carry a body and a type.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 90\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: a\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(problem_for_hyper_error(head.as_bytes()).is_none(), "{head}");
        }
    }
}
