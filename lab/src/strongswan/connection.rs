//! The swanctl.conf a `Charon` loads: one IKE connection with one child,
//! built in code and checked before it is rendered, so that no value can
//! add lines or sections of its own.
//!
//! Invariant: the PSK appears only in the rendered text (written 0600 by
//! `Charon`); `Debug` redacts it and it is zeroized on drop.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// The child's `start_action`. `trap` is left out: kernel-libipsec never
/// negotiates from a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAction {
    /// Initiate as soon as the connection is loaded.
    Start,
    /// Wait for the peer (or `Charon::initiate`).
    None,
}

/// One IKE connection with one child, rendered as swanctl.conf. PSK
/// authentication with FQDN identities; explicit traffic selectors (the
/// route-based `if_id` style needs XFRM interfaces, which libipsec lacks).
#[derive(Clone)]
pub struct Connection {
    /// The connection's name in swanctl.conf.
    pub name: String,
    /// The child's name (what `Charon::initiate` takes).
    pub child: String,
    pub local_addr: String,
    pub remote_addr: String,
    /// FQDN identities (IKEv2 ID_FQDN).
    pub local_id: String,
    pub remote_id: String,
    /// IKE proposal, swanctl syntax (`aes256gcm16-prfsha256-x25519`).
    pub ike_proposal: String,
    /// ESP proposal, swanctl syntax (`aes256gcm16`).
    pub esp_proposal: String,
    /// Subnets (`10.1.0.0/24`) or addresses.
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// IKE SA (rekey, hard lifetime); None: strongSwan's defaults.
    pub ike_lifetime: Option<(Duration, Duration)>,
    /// CHILD_SA (rekey, hard lifetime); None: strongSwan's defaults.
    pub child_lifetime: Option<(Duration, Duration)>,
    pub dpd_delay: Option<Duration>,
    /// UDP encapsulation of ESP forced on (port 4500 from IKE_AUTH on).
    pub encap: bool,
    pub start_action: StartAction,
    psk: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("child", &self.child)
            .field("local_addr", &self.local_addr)
            .field("remote_addr", &self.remote_addr)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("ike_proposal", &self.ike_proposal)
            .field("esp_proposal", &self.esp_proposal)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("ike_lifetime", &self.ike_lifetime)
            .field("child_lifetime", &self.child_lifetime)
            .field("dpd_delay", &self.dpd_delay)
            .field("encap", &self.encap)
            .field("start_action", &self.start_action)
            .field("psk", &"<redacted>")
            .finish()
    }
}

impl Connection {
    /// A connection between two WAN addresses with the defaults the note
    /// found working: IKE `aes256gcm16-prfsha256-x25519`, ESP `aes256gcm16`,
    /// `encap = yes`, identities `left.causeway.test` (here) and
    /// `right.causeway.test`, a random 32-byte PSK, start_action none.
    /// Traffic selectors must still be set (`traffic`).
    pub fn new(local_addr: &str, remote_addr: &str) -> Connection {
        use rand_core::RngCore;
        let mut psk = Zeroizing::new(vec![0u8; 32]);
        rand_core::OsRng.fill_bytes(&mut psk);
        Connection {
            name: "cw".into(),
            child: "net".into(),
            local_addr: local_addr.into(),
            remote_addr: remote_addr.into(),
            local_id: "left.causeway.test".into(),
            remote_id: "right.causeway.test".into(),
            ike_proposal: "aes256gcm16-prfsha256-x25519".into(),
            esp_proposal: "aes256gcm16".into(),
            local_ts: vec![],
            remote_ts: vec![],
            ike_lifetime: None,
            child_lifetime: None,
            dpd_delay: None,
            encap: true,
            start_action: StartAction::None,
            psk,
        }
    }

    /// The other end of the same connection: addresses, identities and
    /// traffic selectors swapped, the same PSK, proposals and timers, and
    /// start_action none (it answers).
    pub fn mirror(&self) -> Connection {
        let mut m = self.clone();
        std::mem::swap(&mut m.local_addr, &mut m.remote_addr);
        std::mem::swap(&mut m.local_id, &mut m.remote_id);
        std::mem::swap(&mut m.local_ts, &mut m.remote_ts);
        m.start_action = StartAction::None;
        m
    }

    pub fn ids(mut self, local: &str, remote: &str) -> Connection {
        self.local_id = local.into();
        self.remote_id = remote.into();
        self
    }

    pub fn traffic(mut self, local_ts: &[&str], remote_ts: &[&str]) -> Connection {
        self.local_ts = local_ts.iter().map(|s| s.to_string()).collect();
        self.remote_ts = remote_ts.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn proposals(mut self, ike: &str, esp: &str) -> Connection {
        self.ike_proposal = ike.into();
        self.esp_proposal = esp.into();
        self
    }

    /// The pre-shared key (any bytes; written in hex).
    pub fn with_psk(mut self, psk: &[u8]) -> Connection {
        self.psk = Zeroizing::new(psk.to_vec());
        self
    }

    /// The PSK, for the other implementation's configuration.
    pub fn psk(&self) -> &[u8] {
        &self.psk
    }

    /// IKE SA: rekey after `rekey`, give up at `life` (swanctl's
    /// `rekey_time` and `over_time = life - rekey`), with no random jitter
    /// (`rand_time = 0s`) so a test knows when it happens. Whole seconds.
    pub fn ike_lifetime(mut self, rekey: Duration, life: Duration) -> Connection {
        self.ike_lifetime = Some((rekey, life));
        self
    }

    /// CHILD_SA: `rekey_time`, `life_time`, and `rand_time = 0s`.
    pub fn child_lifetime(mut self, rekey: Duration, life: Duration) -> Connection {
        self.child_lifetime = Some((rekey, life));
        self
    }

    pub fn dpd_delay(mut self, delay: Duration) -> Connection {
        self.dpd_delay = Some(delay);
        self
    }

    pub fn encap(mut self, on: bool) -> Connection {
        self.encap = on;
        self
    }

    pub fn start_action(mut self, action: StartAction) -> Connection {
        self.start_action = action;
        self
    }

    /// The swanctl.conf text, after checking every value (so that nothing
    /// given here can add lines or sections of its own).
    pub fn to_swanctl_conf(&self) -> anyhow::Result<String> {
        self.check()?;
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let mut ike_timers = String::new();
        if let Some((rekey, life)) = self.ike_lifetime {
            ike_timers += &format!(
                "        rekey_time = {}\n        over_time = {}\n        rand_time = 0s\n",
                secs(rekey),
                secs(life - rekey)
            );
        }
        if let Some(d) = self.dpd_delay {
            ike_timers += &format!("        dpd_delay = {}\n", secs(d));
        }
        let mut child_timers = String::new();
        if let Some((rekey, life)) = self.child_lifetime {
            child_timers += &format!(
                "                rekey_time = {}\n                life_time = {}\n                rand_time = 0s\n",
                secs(rekey),
                secs(life)
            );
        }
        let start = match self.start_action {
            StartAction::Start => "start",
            StartAction::None => "none",
        };
        let hex: String = self.psk.iter().map(|b| format!("{b:02x}")).collect();
        let hex = Zeroizing::new(hex);
        Ok(format!(
            "# Written by causeway-lab (lab/src/strongswan.rs).\n\
             connections {{\n    {name} {{\n        version = 2\n        local_addrs = {la}\n        remote_addrs = {ra}\n\
             \x20       proposals = {ike}\n        encap = {encap}\n{ike_timers}\
             \x20       local {{\n            auth = psk\n            id = {lid}\n        }}\n\
             \x20       remote {{\n            auth = psk\n            id = {rid}\n        }}\n\
             \x20       children {{\n            {child} {{\n                local_ts = {lts}\n                remote_ts = {rts}\n\
             \x20               esp_proposals = {esp}\n{child_timers}                start_action = {start}\n\
             \x20           }}\n        }}\n    }}\n}}\n\
             secrets {{\n    ike-{name} {{\n        id-local = {lid}\n        id-remote = {rid}\n        secret = 0x{psk}\n    }}\n}}\n",
            name = self.name,
            la = self.local_addr,
            ra = self.remote_addr,
            ike = self.ike_proposal,
            encap = if self.encap { "yes" } else { "no" },
            lid = self.local_id,
            rid = self.remote_id,
            child = self.child,
            lts = self.local_ts.join(","),
            rts = self.remote_ts.join(","),
            esp = self.esp_proposal,
            psk = hex.as_str(),
        ))
    }

    fn check(&self) -> anyhow::Result<()> {
        let word = |what: &str, v: &str, extra: &str| {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c)) {
                bail!("{what} {v:?}: only letters, digits and {extra:?}");
            }
            Ok(())
        };
        word("connection name", &self.name, "_-")?;
        word("child name", &self.child, "_-")?;
        word("local id", &self.local_id, ".-")?;
        word("remote id", &self.remote_id, ".-")?;
        word("IKE proposal", &self.ike_proposal, "-,")?;
        word("ESP proposal", &self.esp_proposal, "-,")?;
        for a in [&self.local_addr, &self.remote_addr] {
            a.parse::<IpAddr>().with_context(|| format!("{a:?} is not an IP address"))?;
        }
        for (what, ts) in [("local_ts", &self.local_ts), ("remote_ts", &self.remote_ts)] {
            if ts.is_empty() {
                bail!("{what} is empty: kernel-libipsec needs explicit traffic selectors");
            }
            for t in ts {
                check_subnet(t).with_context(|| format!("{what} {t:?}"))?;
            }
        }
        if self.psk.is_empty() {
            bail!("the PSK is empty");
        }
        let whole = |d: Duration| d.as_secs() > 0 && d.subsec_nanos() == 0;
        for (what, l) in [("IKE", self.ike_lifetime), ("CHILD_SA", self.child_lifetime)] {
            if let Some((rekey, life)) = l {
                if !whole(rekey) || !whole(life) || life <= rekey {
                    bail!("{what} lifetime: whole seconds, rekey before the end ({rekey:?}, {life:?})");
                }
            }
        }
        if self.dpd_delay.is_some_and(|d| !whole(d)) {
            bail!("dpd_delay: whole seconds");
        }
        Ok(())
    }
}

/// `addr` or `addr/prefix`.
fn check_subnet(t: &str) -> anyhow::Result<()> {
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let ip: IpAddr = addr.parse().context("not an address")?;
    if let Some(p) = prefix {
        let p: u8 = p.parse().context("bad prefix length")?;
        if p > if ip.is_ipv4() { 32 } else { 128 } {
            bail!("prefix length {p} too long");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        Connection::new("198.18.0.1", "198.18.0.2")
            .ids("a.causeway.test", "b.causeway.test")
            .traffic(&["10.93.1.0/24"], &["10.93.2.0/24", "10.93.3.1"])
            .with_psk(&[0xab, 0x01])
            .start_action(StartAction::Start)
    }

    #[test]
    fn renders_connection_and_secret() {
        let c = conn()
            .ike_lifetime(Duration::from_secs(60), Duration::from_secs(90))
            .child_lifetime(Duration::from_secs(30), Duration::from_secs(40))
            .dpd_delay(Duration::from_secs(5));
        let text = c.to_swanctl_conf().unwrap();
        for line in [
            "local_addrs = 198.18.0.1",
            "remote_addrs = 198.18.0.2",
            "proposals = aes256gcm16-prfsha256-x25519",
            "encap = yes",
            "rekey_time = 60s",
            "over_time = 30s",
            "dpd_delay = 5s",
            "id = a.causeway.test",
            "local_ts = 10.93.1.0/24",
            "remote_ts = 10.93.2.0/24,10.93.3.1",
            "esp_proposals = aes256gcm16",
            "rekey_time = 30s",
            "life_time = 40s",
            "start_action = start",
            "id-local = a.causeway.test",
            "id-remote = b.causeway.test",
            "secret = 0xab01",
        ] {
            assert!(text.lines().any(|l| l.trim() == line), "{line:?} missing from\n{text}");
        }
        // Every section that opens closes.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn mirror_swaps_the_ends_and_answers() {
        let m = conn().mirror();
        assert_eq!((m.local_addr.as_str(), m.remote_addr.as_str()), ("198.18.0.2", "198.18.0.1"));
        assert_eq!((m.local_id.as_str(), m.remote_id.as_str()), ("b.causeway.test", "a.causeway.test"));
        assert_eq!(m.local_ts, ["10.93.2.0/24", "10.93.3.1"]);
        assert_eq!(m.remote_ts, ["10.93.1.0/24"]);
        assert_eq!(m.start_action, StartAction::None);
        assert_eq!(m.psk(), conn().psk());
    }

    #[test]
    fn refuses_what_would_change_the_file_structure() {
        let bad = [
            conn().ids("a.test\n}", "b.test"),
            conn().proposals("aes256gcm16 }", "aes256gcm16"),
            conn().traffic(&["10.93.1.0/33"], &["10.93.2.0/24"]),
            conn().traffic(&[], &["10.93.2.0/24"]),
            Connection { name: "a b".into(), ..conn() },
            Connection { local_addr: "198.18.0.1\nx".into(), ..conn() },
            conn().ike_lifetime(Duration::from_secs(60), Duration::from_secs(60)),
            conn().child_lifetime(Duration::from_millis(1500), Duration::from_secs(60)),
            conn().with_psk(&[]),
        ];
        for c in bad {
            assert!(c.to_swanctl_conf().is_err(), "accepted {c:?}");
        }
    }

    #[test]
    fn debug_hides_the_psk() {
        let text = format!("{:?}", conn().with_psk(b"very secret"));
        assert!(text.contains("<redacted>") && !text.contains("very") && !text.contains("118"), "{text}");
    }
}
