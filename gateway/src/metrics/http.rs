//! The metrics endpoint over HTTP/1.1 (hyper): `GET /metrics` answers the
//! scrape, any other path is 404. hyper reads requests that arrive in
//! pieces and keeps connections alive between scrapes; the limits below
//! keep slow or idle clients from holding the daemon's resources.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::gateway::Gateway;

/// The Prometheus text format; its parser takes prometheus-client's output
/// (the OpenMetrics `# EOF` line is a comment to it).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once; more are closed on arrival. Scrapers need
/// a few, so the rest can only be clients holding sockets open.
const MAX_CONNECTIONS: usize = 32;
/// Time for a request's head to arrive, counted from the connection's
/// start or the previous response: also how long an idle keep-alive
/// connection stays open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// After this, a connection is asked to close once its current response
/// is out, so a client that never reads cannot hold a slot for ever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// How long that last response may take before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::error::Error> {
    TcpListener::bind(addr).await.map_err(|source| crate::error::Error::Metrics { addr, source })
}

fn respond(iface: &Gateway, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut r = reply(StatusCode::OK, super::render(iface));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            r
        }
        (_, "/metrics") => {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, String::new());
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            r
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    }
}

/// Serves the listener until the task is dropped.
pub async fn serve(iface: Arc<Gateway>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: do not spin on it.
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: too many connections; closing a new one");
            continue;
        };
        let iface = iface.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&iface, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                // Errors are the client's (a broken request, a reset): hyper
                // has answered what it could.
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server() -> SocketAddr {
        let iface = causeway_dataplane::interface::Interface::new(
            "cwhttp0".into(),
            Some(causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng)),
            1420,
            1,
            0,
        )
        .unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(Arc::new(Gateway::new(Arc::new(iface))), listener));
        addr
    }

    /// Reads one response whose body has a Content-Length.
    async fn response(s: &mut TcpStream) -> (String, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                    .unwrap();
                if body.len() >= len {
                    return (head.to_string(), body.to_string());
                }
            }
        }
    }

    #[tokio::test]
    async fn scrapes_in_pieces_and_on_one_connection() {
        let addr = server().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The head in pieces, as a slow link delivers it.
        for piece in ["GET /met", "rics HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"] {
            s.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (head, body) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
        assert!(body.contains("causeway_peers_configured{interface=\"cwhttp0\"} 0"), "{body}");
        // Kept alive: the next scrape and a wrong path on the same connection.
        s.write_all(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(response(&mut s).await.0.starts_with("HTTP/1.1 200 OK"));
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(response(&mut s).await.0.starts_with("HTTP/1.1 404 Not Found"));
        s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        assert!(response(&mut s).await.0.starts_with("HTTP/1.1 405"));
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let addr = server().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        assert!(all.starts_with("HTTP/1.1 200 OK") && all.contains("# EOF"), "{all}");
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_others() {
        let addr = server().await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(5), response(&mut s)).await;
        assert!(answered.unwrap().0.starts_with("HTTP/1.1 200 OK"));
    }
}
