//! tunctl's side of the control API: one JSON request on the daemon's
//! socket, one JSON reply back.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context};
use causeway_gateway::api::types::{Reply, Request};
use serde::de::DeserializeOwned;

/// One reply line as `T`. A reply that does not parse as `T` (say, a
/// field renamed by another version of causewayd) is an error: printing
/// zeros for it would mislead.
pub fn parse_reply<T: DeserializeOwned>(line: &str) -> anyhow::Result<T> {
    let reply: Reply<T> = serde_json::from_str(line)
        .context("causewayd sent a reply tunctl does not understand (are both from the same release?)")?;
    match reply {
        Reply::Ok(v) => Ok(v),
        Reply::Error(e) => bail!("causewayd refused: {e}"),
    }
}

/// The interfaces whose daemons have a control socket, by name.
fn running_interfaces() -> Vec<String> {
    let dir = std::path::Path::new(causeway_gateway::sockets::API_SOCKET_DIR);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".sock").map(String::from)).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn request<T: DeserializeOwned>(interface: &str, req: &Request) -> anyhow::Result<T> {
    // The daemon takes no other names; one with a '/' would make the
    // socket's path reach outside the directory, and the request (a PSK
    // among them) go to whatever listens there.
    if let Err(e) = causeway_config::rules::wg_quick_interface_name(interface) {
        bail!("{interface:?} is not an interface name: {e}");
    }
    let path = causeway_gateway::sockets::api_socket_path(interface);
    let s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            let running = running_interfaces();
            let others = if running.is_empty() {
                "no causewayd runs here".to_string()
            } else {
                format!("causewayd runs for {}", running.join(", "))
            };
            anyhow::anyhow!("no causewayd is running for {interface} ({others}; nothing listens on {})", path.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("permission denied on {}: run tunctl as root", path.display())
        }
        _ => anyhow::anyhow!("cannot reach causewayd for {interface}: {e}"),
    })?;
    let text = format!("{}\n", serde_json::to_string(req)?);
    // MSG_NOSIGNAL: a daemon that closes the connection before it has read
    // the request (stopping, or refusing one past its size cap) must give
    // an error here, not SIGPIPE, whose default action main restores.
    let sock = socket2::SockRef::from(&s);
    let mut sent = 0;
    let mut refused = None;
    while sent < text.len() {
        match sock.send_with_flags(&text.as_bytes()[sent..], libc::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    // A reply sent before the close (the cap's) is still read.
    let mut line = String::new();
    let read = BufReader::new(s).read_line(&mut line);
    if line.is_empty() {
        match (refused, read) {
            (Some(e), _) | (None, Err(e)) => bail!("causewayd closed the connection before reading the request ({e})"),
            (None, Ok(_)) => bail!("causewayd closed the connection without a reply"),
        }
    }
    parse_reply(&line)
}
