//! The control plane on tokio: the UAPI socket and the timer loop. Nothing
//! here runs on the data path; it reaches the workers only through the
//! shared `Gateway` and the data plane's `Interface` it wraps.

use std::sync::Arc;
use std::time::Duration;

use causeway_wireguard::TimerAction;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::gateway::Gateway;
use crate::uapi;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::io::Socket;
use causeway_dataplane::wireguard::{send_initiation, send_keepalive};

pub async fn serve_uapi(iface: Arc<Gateway>, listener: UnixListener) {
    crate::sockets::serve_each(listener, "UAPI", |stream| handle_client(iface.clone(), stream)).await
}

/// The most one UAPI request may send. `wg setconf` of a thousand peers
/// with a hundred prefixes each is a few MB; the cap keeps a client (the
/// socket is root's only, but may be buggy) from growing the daemon
/// without bound.
const MAX_REQUEST_BYTES: u64 = 32 << 20;

/// How long a request may pause between its lines; `wg` writes each
/// request at once.
const LINE_PATIENCE: Duration = Duration::from_secs(10);

async fn handle_client(iface: Arc<Gateway>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST_BYTES)).lines();
    loop {
        // Each request has the whole allowance (bytes already buffered
        // count against the one before).
        lines.get_mut().get_mut().set_limit(MAX_REQUEST_BYTES);
        // A line that is not UTF-8 (wg never writes one) spoils its
        // request, which is answered EINVAL once it ends, as wireguard-go
        // answers it, rather than the connection closing without a word.
        // The line's bytes are consumed, so the next line reads on.
        let not_utf8 = |e: &std::io::Error| e.kind() == std::io::ErrorKind::InvalidData;
        let mut spoiled = false;
        let op = match lines.next_line().await {
            Ok(Some(l)) => l,
            Err(e) if not_utf8(&e) => {
                spoiled = true;
                String::new()
            }
            _ => return,
        };
        // Wiped when dropped: a set body carries the private key and PSKs.
        let mut body = Zeroizing::new(Vec::new());
        loop {
            match tokio::time::timeout(LINE_PATIENCE, lines.next_line()).await {
                Ok(Ok(Some(l))) if l.is_empty() => break,
                Ok(Ok(Some(l))) => body.push(l),
                Ok(Err(e)) if not_utf8(&e) => spoiled = true,
                // A request cut short (closed before its blank line, past
                // the cap, stalled) is not applied. wireguard-go applies
                // each line as it reads it, so a client killed mid-way (a
                // `wg setconf` stopped with Ctrl-C, whose request begins
                // with replace_peers) leaves only the peers it got to, or
                // a value cut in two; wg always ends with the blank line.
                _ => {
                    tracing::debug!("UAPI request cut short; nothing applied");
                    return;
                }
            }
        }
        let response = match op.as_str() {
            _ if spoiled => errno_reply(libc::EINVAL),
            // A get with lines after it is not one wg sends (wireguard-go
            // refuses it too).
            "get=1" if !body.is_empty() => errno_reply(libc::EINVAL),
            "get=1" => {
                // Not in the middle of a set: `wg show` during `wg setconf`
                // sees the state before or after it, never half of it.
                let gw = iface.clone();
                match tokio::task::spawn_blocking(move || {
                    let _one_change = gw.changing();
                    let mut answer = uapi::get(&gw);
                    answer.push_str(&errno_reply(0));
                    answer
                })
                .await
                {
                    Ok(answer) => answer,
                    Err(_) => errno_reply(libc::EIO),
                }
            }
            "set=1" => {
                let iface2 = iface.clone();
                let result = tokio::task::spawn_blocking(move || {
                    uapi::parse_set(body.iter().map(String::as_str)).and_then(|req| {
                        let _one_change = iface2.changing();
                        uapi::apply_set(&iface2, req)
                    })
                })
                .await;
                match result {
                    Ok(Ok(())) => errno_reply(0),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "UAPI set refused");
                        errno_reply(e.errno())
                    }
                    Err(_) => errno_reply(libc::EIO),
                }
            }
            other => {
                tracing::warn!(op = %operation_name(other), "unknown UAPI operation");
                errno_reply(libc::EINVAL)
            }
        };
        if write.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Moves a peer whose handshakes keep failing to its next configured
/// endpoint, resolving names again (so a single DNS endpoint is re-resolved
/// every `failover_after` while the peer does not answer). Names are
/// resolved off the runtime, one lookup at a time per peer; the next
/// handshake retry (at most REKEY_TIMEOUT later) goes to the new address,
/// unless the endpoint changed meanwhile (a handshake completed, the peer
/// roamed): that newer state wins over a lookup started before it.
fn failover(peer: &Arc<causeway_dataplane::peer::PeerState>, now: causeway_wireguard::Time) {
    use std::sync::atomic::Ordering;
    if peer.failover_lookup.load(Ordering::Acquire) {
        return;
    }
    let endpoints = peer.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(next) = peer.next_endpoint(endpoints.len(), now) else { return };
    let (peer, endpoint) = (peer.clone(), endpoints[next].clone());
    let from = peer.endpoint().map(|e| e.addr);
    peer.failover_lookup.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || {
        let _done = LookupDone(&peer.failover_lookup);
        match endpoint.resolve() {
            Ok(addrs) if !addrs.is_empty() => {
                let now_at = peer.endpoint().map(|e| e.addr);
                if now_at != from {
                    tracing::debug!(peer = %peer.name(), "endpoint changed during the failover's lookup; kept");
                } else if from != Some(addrs[0]) {
                    let from = from.map(|a| a.to_string()).unwrap_or_default();
                    tracing::warn!(peer = %peer.name(), %from, to = %addrs[0], "handshakes failing: trying the next endpoint");
                    peer.set_endpoint(addrs[0]);
                }
            }
            _ => {
                tracing::warn!(peer = %peer.name(), %endpoint, "next endpoint does not resolve; will try the one after")
            }
        }
    });
}

/// Clears a peer's lookup-in-progress flag when the lookup's task ends,
/// however it ends: a flag left set would stop that peer's lookups for good.
struct LookupDone<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for LookupDone<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Resolves each peer's configured endpoint name again and follows it if it
/// moved (see `PeerState::refresh_from_name`). Off the runtime: a lookup
/// can take seconds. A peer whose last lookup still runs is skipped.
fn refresh_names(iface: &Interface) {
    use std::sync::atomic::Ordering;
    for peer in iface.peers() {
        if peer.refresh_lookup.load(Ordering::Acquire) {
            continue;
        }
        let endpoint = {
            let eps = peer.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner());
            match eps.get(peer.endpoint_index()) {
                Some(e @ causeway_config::Endpoint::Host { .. }) => e.clone(),
                _ => continue,
            }
        };
        peer.refresh_lookup.store(true, Ordering::Release);
        tokio::task::spawn_blocking(move || {
            let _done = LookupDone(&peer.refresh_lookup);
            match endpoint.resolve() {
                Ok(addrs) => {
                    if let Some(to) = peer.refresh_from_name(&addrs) {
                        tracing::info!(peer = %peer.name(), %endpoint, %to, "endpoint name resolves elsewhere now; following it");
                    }
                }
                Err(e) => tracing::debug!(peer = %peer.name(), %endpoint, error = %e, "endpoint name did not resolve"),
            }
        });
    }
}

/// Sends a first handshake initiation to a peer that has an endpoint, no
/// session and has never been contacted: at start-up, and as soon as a
/// peer is configured later, whichever way (`wg setconf` as wg-quick and
/// wg-quick@.service run it, `tunctl peer add`, a reload). A gateway that
/// restarts (a crash, an upgrade) thus reaches out at once: the other side
/// still holds the old session and would wait 15 s before noticing that
/// its packets go unanswered. Retries are the protocol's timers' (and
/// REKEY_TIMEOUT limits them), so this fires once per peer.
fn reach_out(
    iface: &Gateway,
    peer: &causeway_dataplane::peer::PeerState,
    sock: &dyn Socket,
    now: causeway_wireguard::Time,
) {
    let untouched = peer.handshakes_initiated.load(std::sync::atomic::Ordering::Relaxed) == 0
        && peer.crypto().current_keypair().is_none()
        && !peer.crypto().handshake_in_flight();
    if untouched && peer.endpoint().is_some() {
        send_initiation(iface, peer, sock, now);
    }
}

/// Timer ticks between two looks at the kernel's routes: 5 s.
const ROUTE_AUDIT_TICKS: u64 = 50;

/// Runs every peer's protocol timers until the interface shuts down.
/// 100 ms of granularity is well inside the protocol's tolerances (the
/// smallest timer is the 5 s handshake retry with up to 333 ms of jitter).
pub async fn run_timers(iface: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut last_sample = iface.clock.now();
    let mut last_refresh = iface.clock.now();
    while !iface.is_shutting_down() {
        tick.tick().await;
        ticks += 1;
        let now = iface.clock.now();
        let sockets = iface.sockets();
        let sock = &*sockets.sockets[0];
        for peer in iface.peers() {
            // Held without a session for REKEY_ATTEMPT_TIME, attempts or
            // not (a peer with no endpoint makes none, so no give-up below
            // would drop them): stale by then.
            let expired = iface.expire_held(&peer);
            if expired > 0 {
                tracing::info!(peer = %peer.public_key(), dropped = expired, "no session in 90 s: dropping the packets held for the peer");
            }
            reach_out(&iface, &peer, sock, now);
            failover(&peer, now);
            while let Some(action) = iface.device.poll_timers(peer.crypto(), now) {
                match action {
                    TimerAction::SendKeepalive => send_keepalive(&iface, &peer, sock, now),
                    TimerAction::InitiateHandshake | TimerAction::RetryHandshake => {
                        send_initiation(&iface, &peer, sock, now)
                    }
                    TimerAction::GiveUpHandshake => {
                        let dropped = peer.clear_staged();
                        iface.counters.count_many(causeway_dataplane::counters::Drop::StagedExpired, dropped);
                        tracing::info!(peer = %peer.public_key(), dropped, "handshake did not complete in 90 s; giving up until there is new traffic");
                    }
                    TimerAction::ClearKeys => {
                        tracing::debug!(peer = %peer.public_key(), "session keys erased")
                    }
                }
            }
        }
        // Sites before routes: a site whose last gateway just went down
        // loses its kernel routes in this same tick.
        crate::site_health::tick(&iface, sock, now);
        // Routes of ours removed behind our back (a link flap, a flush)
        // are put back within this.
        if ticks.is_multiple_of(ROUTE_AUDIT_TICKS) {
            iface.audit_kernel_routes();
        }
        // A netlink round trip per changed prefix, and nothing when the
        // routed prefixes did not change.
        iface.sync_kernel_routes();
        if iface.dns_refresh().is_some_and(|every| now.saturating_since(last_refresh) >= every) {
            last_refresh = now;
            refresh_names(&iface);
        }
        // wg-quick and operators change the MTU with `ip link`; follow it
        // so padding never exceeds it.
        if ticks.is_multiple_of(10) {
            let elapsed = now.saturating_since(last_sample).as_secs_f64();
            last_sample = now;
            iface.sample_rates(elapsed);
            if let Some(mtu) = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", iface.name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                iface.set_mtu(mtu);
            }
        }
    }
}

/// What of an unknown UAPI operation line may be logged: the name before
/// '=', shortened. A client that left out "set=1" may have sent a key as
/// its first line, and the value is never logged.
/// The line that ends a reply. The number is negated, as wireguard-go
/// writes it (`-EINVAL`) and wg reads it: wg sets `errno` to its negation
/// and prints that, so a positive 22 shows as "Unknown error -22" where
/// -22 shows as "Invalid argument".
fn errno_reply(errno: i32) -> Zeroizing<String> {
    Zeroizing::new(format!("errno={}\n\n", -errno))
}

fn operation_name(line: &str) -> String {
    match line.split_once('=') {
        Some((name, _)) => uapi::loggable_name(name),
        // Without '=' the line may be a bare key: nothing of it is told.
        None => format!("a line of {} bytes without '='", line.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure as wireguard-go answers it, a negative errno, which wg
    /// turns into strerror's text; success as 0.
    #[tokio::test]
    async fn failures_answer_a_negative_errno() {
        let iface = Interface::new("cwctl0".into(), None, 1420, 1, 0).unwrap();
        let gw = Arc::new(Gateway::new(Arc::new(iface)));
        let (client, server) = UnixStream::pair().unwrap();
        tokio::spawn(handle_client(gw, server));
        let mut client = BufReader::new(client);
        let einval = format!("errno=-{}\n\n", libc::EINVAL);
        for (request, want) in [
            ("set=1\nlisten_port=x\n\n", einval.as_str()),
            ("get=1\nlisten_port=1\n\n", &einval),
            ("frobnicate=1\n\n", &einval),
            ("set=1\n\n", "errno=0\n\n"),
            // Not UTF-8, in the body and in the operation's line: refused,
            // and the connection goes on.
            ("set=1\n\u{ff}=1\n\n", &einval),
            ("\u{ff}=1\nlisten_port=1\n\n", &einval),
            ("set=1\n\n", "errno=0\n\n"),
        ] {
            // \u{ff} stands for a lone 0xff byte, which no &str can hold.
            let bytes: Vec<u8> = request.chars().map(|c| if c == '\u{ff}' { 0xff } else { c as u8 }).collect();
            client.get_mut().write_all(&bytes).await.unwrap();
            let mut reply = String::new();
            while !reply.ends_with("\n\n") {
                assert_ne!(client.read_line(&mut reply).await.unwrap(), 0, "{request:?}: closed after {reply:?}");
            }
            assert_eq!(reply, want, "{request:?}");
        }
    }

    #[test]
    fn an_unknown_operation_is_logged_by_its_name_only() {
        let key = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
        assert_eq!(operation_name(&format!("private_key={key}")), "\"private_key\"");
        assert_eq!(operation_name(key), "a line of 64 bytes without '='");
        assert_eq!(operation_name("frobnicate=1"), "\"frobnicate\"");
        // A base64 key (as wg genkey prints) holds '=' itself.
        let b64 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        assert_eq!(operation_name(b64), "(a name of 43 characters, not shown)");
    }
}
