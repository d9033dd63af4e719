//! Causeway in the comparison: causewayd on each gateway with one peer, a
//! WireGuard peer (`causeway`, and `causeway-baseline` with another
//! binary) or an IPsec peer (`causeway-esp`: ESP in UDP on port 4500,
//! and `causeway-esp-baseline` with the other binary; `causeway-esp-raw`:
//! raw ESP, IP protocol 50, and `causeway-esp-raw-baseline`). Every variant has the
//! same tunnel addresses, allowed IPs and MTU 1420, and clamps the MSS
//! itself, so only the protocol differs.
//!
//! Invariant: an ESP run is measured only once both daemons report an up
//! child SA with the cipher and encapsulation asked for, one end the IKE
//! initiator and the other the responder (so one IKE SA, not two racing);
//! `EspPair::verify` checks it, and `EspPair::carried` that the bytes
//! measured crossed that SA.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use causeway_lab::{self as lab, b64, Netns, Process};
use serde_json::Value;

use crate::Side;

/// The proposals Causeway's ESP is measured with: the same as strongSwan's
/// in the comparison (strongswan_pair.rs), so their columns compare.
const ESP_IKE: &str = "aes256gcm16-prfsha256-x25519";
const ESP_ESP: &str = "aes256gcm16";

/// How a Causeway ESP implementation puts ESP on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// `encap = "always"`: ESP in UDP on port 4500 (RFC 3948).
    Udp,
    /// `encap = "auto"` with no NAT between the namespaces: raw ESP.
    Raw,
}

impl Encap {
    /// The Causeway ESP implementations; None for every other name.
    pub fn of(kind: &str) -> Option<Encap> {
        match kind {
            "causeway-esp" | "causeway-esp-baseline" => Some(Encap::Udp),
            "causeway-esp-raw" | "causeway-esp-raw-baseline" => Some(Encap::Raw),
            _ => None,
        }
    }

    fn config(self) -> &'static str {
        match self {
            Encap::Udp => "always",
            Encap::Raw => "auto",
        }
    }

    /// What the API's `child_sas[].encapsulation` says for it.
    fn status(self) -> &'static str {
        match self {
            Encap::Udp => "udp",
            Encap::Raw => "esp",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Encap::Udp => "in UDP port 4500 (encap = \"always\")",
            Encap::Raw => "raw, IP protocol 50 (encap = \"auto\", no NAT between the namespaces)",
        }
    }
}

/// The note a run's results carry for a Causeway ESP implementation:
/// what was configured, and what the daemons reported in each round
/// (`seen`: distinct `EspPair::verify` results).
pub fn esp_note(kind: &str, seen: &[String]) -> Option<String> {
    let encap = Encap::of(kind)?;
    Some(format!(
        "{kind}: causewayd to causewayd, one IPsec peer each (IP identities, PSK), IKE {ESP_IKE} (gateway a \
         initiates, gateway b only responds), ESP {ESP_ESP} {}, tunnel MTU 1420 and MSS clamp as for causeway; the \
         daemons reported {}; CPU is causewayd's (IKE and ESP)",
        encap.describe(),
        if seen.is_empty() { "nothing".to_string() } else { seen.join("; ") }
    ))
}

/// Starts causewayd in `ns` with one WireGuard peer. Returns it and its
/// interface's name.
pub fn start_causeway(ns: &Netns, dir: &Path, side: &Side<'_>, bin: &Path) -> anyhow::Result<(Process, String)> {
    let Side { me, peer, tunnel, peer_wan, .. } = *side;
    let ifname = lab::unique("cb");
    let allowed = quoted(&side.allowed_ips());
    // mss_clamp is on by default; the routed topology relies on it.
    let cfg = format!(
        "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\nlisten_port = 51820\nmtu = 1420\naddresses = [\"{tunnel}/24\"]\n\n[[peer]]\nname = \"other\"\npublic_key = \"{}\"\nendpoints = [\"{peer_wan}:51820\"]\nallowed_ips = [{allowed}]\n",
        b64(me.as_bytes()),
        b64(peer.as_bytes())
    );
    launch(ns, dir, &ifname, &cfg, bin)
}

/// Starts causewayd in `ns` with one IPsec peer; `initiate` false makes it
/// only answer. `psk` is the pair's shared key file. Returns it and its
/// interface's name.
pub fn start_causeway_esp(
    ns: &Netns,
    dir: &Path,
    side: &Side<'_>,
    encap: Encap,
    initiate: bool,
    psk: &Path,
    bin: &Path,
) -> anyhow::Result<(Process, String)> {
    let Side { me, tunnel, peer_tunnel, peer_wan, .. } = *side;
    let ifname = lab::unique("ce");
    let allowed = quoted(&side.allowed_ips());
    // The interface still needs a private key (its WireGuard side, unused
    // here); traffic selectors stay 0.0.0.0/0 and ::/0, as on a
    // route-based VPN, and allowed_ips route as for WireGuard.
    let cfg = format!(
        r#"[interface]
name = "{ifname}"
private_key = "{}"
listen_port = 51820
mtu = 1420
addresses = ["{tunnel}/24"]

[[peer]]
name = "other"
protocol = "ipsec"
endpoints = ["{peer_wan}"]
allowed_ips = [{allowed}]
local_id = "{tunnel}"
remote_id = "{peer_tunnel}"
psk_file = "{}"
ike_proposals = ["{ESP_IKE}"]
esp_proposals = ["{ESP_ESP}"]
encap = "{}"
initiate = {initiate}
"#,
        b64(me.as_bytes()),
        psk.display(),
        encap.config(),
    );
    launch(ns, dir, &ifname, &cfg, bin)
}

/// Writes the pre-shared key both ends of an ESP pair read: 32 random
/// bytes in strongSwan's 0x notation. A fresh X25519 secret is those
/// bytes, from the same generator the WireGuard keys come from.
pub fn write_psk(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let (secret, _) = lab::keypair();
    let hex: String = secret.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{}.psk", lab::unique("psk")));
    lab::write_private(&path, &format!("0x{hex}\n"))?;
    Ok(path)
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
}

fn launch(ns: &Netns, dir: &Path, ifname: &str, cfg: &str, bin: &Path) -> anyhow::Result<(Process, String)> {
    let path = dir.join(format!("{ifname}.toml"));
    lab::write_private(&path, cfg)?;
    let log = dir.join(format!("{ifname}.log"));
    let p = ns.spawn("causewayd", bin, &["up", "--config", path.to_str().context("non-UTF-8 path")?], Some(&log))?;
    if !lab::wait_for_socket(ifname, Duration::from_secs(10)) {
        bail!("causewayd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    Ok((p, ifname.to_string()))
}

/// The two interfaces of a Causeway ESP pair, initiator first.
pub struct EspPair {
    pub encap: Encap,
    pub initiator: String,
    pub responder: String,
    /// Where the daemons log, for errors.
    pub dir: std::path::PathBuf,
}

impl EspPair {
    /// The IPsec peer's status on `ifname`.
    fn peer(ifname: &str) -> anyhow::Result<Value> {
        let status = lab::api_status(ifname).with_context(|| format!("no API status from {ifname}"))?;
        Ok(status["ipsec_peers"][0].clone())
    }

    pub fn logs(&self) -> String {
        [&self.initiator, &self.responder]
            .iter()
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!("--- {i}.log (last lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until both ends have an up child SA, then checks it is the
    /// ESP asked for. Returns what they report, e.g. "child SA aes256gcm16
    /// udp, IKE aes256gcm16-prfsha256-x25519, no NAT".
    pub fn verify(&self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let (a, b) = loop {
            let (a, b) = (Self::peer(&self.initiator)?, Self::peer(&self.responder)?);
            if a["up"] == true && b["up"] == true {
                break (a, b);
            }
            if Instant::now() > deadline {
                bail!("no child SA up within {timeout:?}: initiator {a}\nresponder {b}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if a["initiator"] != true || b["initiator"] != false {
            bail!("expected gateway a to be the IKE initiator and b the responder: {a}\n{b}");
        }
        let mut seen = Vec::new();
        for (end, st) in [("initiator", &a), ("responder", &b)] {
            let child = &st["child_sas"][0];
            let encap = child["encapsulation"].as_str().unwrap_or("?");
            if encap != self.encap.status() {
                bail!("{end}: child SA encapsulation {encap}, expected {}: {st}", self.encap.status());
            }
            // `nat` is also true when encap = "always" forces UDP (as
            // strongSwan's encap = yes does); only raw ESP needs it false.
            if self.encap == Encap::Raw && st["nat"] != false {
                bail!("{end}: IKE saw a NAT between the namespaces: {st}");
            }
            seen.push(format!(
                "child SA {} {encap}, IKE {}, {} child SA(s)",
                child["cipher"].as_str().unwrap_or("?"),
                st["ike_proposal"].as_str().unwrap_or("?"),
                st["child_sas"].as_array().map_or(0, Vec::len),
            ));
        }
        if seen[0] != seen[1] {
            bail!("the ends disagree: initiator {}, responder {}", seen[0], seen[1]);
        }
        Ok(seen.swap_remove(0))
    }

    /// Bytes sent and received through the initiator's IPsec peer.
    pub fn bytes(&self) -> anyhow::Result<(u64, u64)> {
        let st = Self::peer(&self.initiator)?;
        Ok((st["tx_bytes"].as_u64().unwrap_or(0), st["rx_bytes"].as_u64().unwrap_or(0)))
    }

    /// Checks that a transfer of `bytes` from the initiator's side crossed
    /// the IPsec peer: its tx counter (inner bytes) grew at least as much
    /// since `before` (from `bytes()`).
    pub fn carried(&self, before: (u64, u64), bytes: f64) -> anyhow::Result<()> {
        let (tx, _) = self.bytes()?;
        let sent = tx.saturating_sub(before.0) as f64;
        if sent < bytes {
            bail!("iperf3 received {bytes} bytes but the IPsec peer sent only {sent}:\n{}", self.logs());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_implementations_and_their_notes() {
        assert!(Encap::of("causeway").is_none() && Encap::of("strongswan").is_none());
        assert!(esp_note("causeway", &[]).is_none());
        let seen = ["child SA aes256gcm16 udp, IKE aes256gcm16-prfsha256-x25519, 1 child SA(s)".to_string()];
        let note = esp_note("causeway-esp", &seen).unwrap();
        assert!(note.starts_with("causeway-esp: "), "{note}");
        assert!(note.contains("in UDP port 4500") && note.contains(&seen[0]), "{note}");
        let raw = esp_note("causeway-esp-raw", &[]).unwrap();
        assert!(raw.contains("IP protocol 50") && raw.contains("reported nothing"), "{raw}");
        assert_eq!((Encap::Udp.config(), Encap::Udp.status()), ("always", "udp"));
        assert_eq!((Encap::Raw.config(), Encap::Raw.status()), ("auto", "esp"));
    }
}
