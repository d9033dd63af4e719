//! Traffic that runs while a fleet test breaks something: an iperf3 client
//! in the background (its JSON read when it ends, with per-stream bytes per
//! interval to find the streams that stalled and when they came back), and
//! a background ping whose losses are counted at the end.
//!
//! Invariants: both programs run under timeout(1) and as `Process`es
//! (SIGTERM on drop), so a test that fails while they run leaves nothing
//! behind; their output goes to files in the directory the caller gives.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{unique, Netns, Process};

static PORTS: AtomicU32 = AtomicU32::new(0);

/// An iperf3 client (and its one-off server) running in the background.
pub struct Traffic {
    client: Process,
    _server: Process,
    out: PathBuf,
    started: Instant,
}

impl Traffic {
    /// Starts an iperf3 server on `addr` in `server` and a client in
    /// `client` with `-J -i 1` and `args` (such as `-t 30 -P 8`); the run
    /// may last at most `limit`.
    pub fn start(
        server: &Netns,
        client: &Netns,
        addr: &str,
        args: &[&str],
        limit: Duration,
        dir: &Path,
    ) -> anyhow::Result<Traffic> {
        let port_n = 5301 + (PORTS.fetch_add(1, Ordering::Relaxed) % 500) as u16;
        let port = port_n.to_string();
        let mut srv = server.spawn("iperf3 server", "iperf3", &["-s", "-1", "-B", addr, "-p", &port], None)?;
        // The client tries to connect once.
        server.wait_listening(&mut srv, port_n, Duration::from_secs(30))?;
        let out = dir.join(format!("{}.json", unique("iperf")));
        let limit = limit.as_secs().max(1).to_string();
        let mut full = vec!["-k", "2", limit.as_str(), "iperf3", "-c", addr, "-p", &port, "-J", "-i", "1"];
        full.extend_from_slice(args);
        let client = client.spawn("iperf3 client", "timeout", &full, Some(&out))?;
        Ok(Traffic { client, _server: srv, out, started: Instant::now() })
    }

    /// When the client was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits up to `timeout` for the client to end; its JSON report.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        if self.client.wait_exit(timeout).is_none() && self.client.running() {
            bail!("iperf3 still runs after {timeout:?}");
        }
        let text = std::fs::read_to_string(&self.out)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("iperf3 printed no JSON: {text}"))?;
        if let Some(e) = json.get("error").and_then(|e| e.as_str()) {
            bail!("iperf3: {e}");
        }
        Ok(json)
    }
}

/// Bytes a stream moved in each interval of an iperf3 `-J -i 1` report.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSeries {
    /// iperf3's socket number for the stream.
    pub socket: u64,
    /// (interval start in seconds from the test's start, bytes).
    pub intervals: Vec<(f64, u64)>,
}

/// The series of every stream, in socket order.
pub fn stream_series(json: &serde_json::Value) -> Vec<StreamSeries> {
    let mut series: Vec<StreamSeries> = vec![];
    for interval in json["intervals"].as_array().into_iter().flatten() {
        for s in interval["streams"].as_array().into_iter().flatten() {
            let (Some(socket), Some(start), Some(bytes)) =
                (s["socket"].as_u64(), s["start"].as_f64(), s["bytes"].as_u64())
            else {
                continue;
            };
            match series.iter_mut().find(|x| x.socket == socket) {
                Some(x) => x.intervals.push((start, bytes)),
                None => series.push(StreamSeries { socket, intervals: vec![(start, bytes)] }),
            }
        }
    }
    series.sort_by_key(|s| s.socket);
    series
}

/// A stretch of intervals in which one stream moved fewer than the
/// threshold's bytes: from the first such interval's start to the start
/// of the first interval that moved enough again (`None`: it never did).
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub socket: u64,
    pub from: f64,
    pub until: Option<f64>,
}

impl Stall {
    /// How long the stall lasted (to `end` if it never ended).
    pub fn length(&self, end: f64) -> f64 {
        self.until.unwrap_or(end) - self.from
    }
}

/// Every stall of every stream that starts at or after `after` seconds.
pub fn stalls(series: &[StreamSeries], min_bytes: u64, after: f64) -> Vec<Stall> {
    let mut out = vec![];
    for s in series {
        let mut open: Option<f64> = None;
        for &(start, bytes) in &s.intervals {
            if start + 1e-6 < after {
                continue;
            }
            match (open, bytes < min_bytes) {
                (None, true) => open = Some(start),
                (Some(from), false) => {
                    out.push(Stall { socket: s.socket, from, until: Some(start) });
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            out.push(Stall { socket: s.socket, from, until: None });
        }
    }
    out
}

/// A ping running in the background: `ping -i INTERVAL -c COUNT`.
pub struct Pinger {
    process: Process,
    out: PathBuf,
}

impl Pinger {
    pub fn start(from: &Netns, addr: &str, interval: Duration, count: u32, dir: &Path) -> anyhow::Result<Pinger> {
        let out = dir.join(format!("{}.txt", unique("ping")));
        let (i, c) = (format!("{:.2}", interval.as_secs_f64()), count.to_string());
        let limit = ((interval.as_secs_f64() * f64::from(count)) as u64 + 15).to_string();
        let process =
            from.spawn("ping", "timeout", &[&limit, "ping", "-q", "-i", &i, "-c", &c, "-W", "1", addr], Some(&out))?;
        Ok(Pinger { process, out })
    }

    /// Waits for it to end; (sent, received).
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<(u64, u64)> {
        self.process.wait_exit(timeout);
        let text = std::fs::read_to_string(&self.out)?;
        ping_summary(&text).with_context(|| format!("no ping summary in {text:?}"))
    }
}

/// (transmitted, received) from ping's summary line.
pub fn ping_summary(text: &str) -> Option<(u64, u64)> {
    // "350 packets transmitted, 350 received, 0% packet loss, time 34901ms"
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let sent = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let received = parts.next()?.split_whitespace().next()?.parse().ok()?;
    Some((sent, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> serde_json::Value {
        // The shape of iperf3 3.12's `-J -i 1` intervals (fields trimmed).
        serde_json::json!({"intervals": [
            {"streams": [{"socket": 5, "start": 0.0, "bytes": 1000}, {"socket": 7, "start": 0.0, "bytes": 900}]},
            {"streams": [{"socket": 5, "start": 1.0, "bytes": 0}, {"socket": 7, "start": 1.0, "bytes": 800}]},
            {"streams": [{"socket": 5, "start": 2.0, "bytes": 10}, {"socket": 7, "start": 2.0, "bytes": 0}]},
            {"streams": [{"socket": 5, "start": 3.0, "bytes": 1200}, {"socket": 7, "start": 3.0, "bytes": 0}]},
        ]})
    }

    #[test]
    fn series_and_stalls_per_stream() {
        let series = stream_series(&report());
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].intervals, [(0.0, 1000), (1.0, 0), (2.0, 10), (3.0, 1200)]);
        let st = stalls(&series, 100, 0.0);
        assert_eq!(st, [Stall { socket: 5, from: 1.0, until: Some(3.0) }, Stall { socket: 7, from: 2.0, until: None }]);
        assert_eq!(st[0].length(4.0), 2.0);
        assert_eq!(st[1].length(4.0), 2.0);
        assert!(stalls(&series, 100, 3.5).is_empty(), "nothing starts after 3.5 s");
        assert_eq!(stalls(&series, 5, 0.0).len(), 2, "0-byte intervals stall at any threshold");
    }

    #[test]
    fn ping_summary_is_read() {
        let text = "PING 10.2.1.2 (10.2.1.2) 56(84) bytes of data.\n\n--- 10.2.1.2 ping statistics ---\n\
                    350 packets transmitted, 349 received, 0.285714% packet loss, time 34901ms\n";
        assert_eq!(ping_summary(text), Some((350, 349)));
        assert_eq!(ping_summary("ping: connect: Network is unreachable"), None);
    }
}
