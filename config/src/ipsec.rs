//! IPsec peers: `[[peer]]` tables with `protocol = "ipsec"`. They share the
//! peer table's name, endpoints, allowed_ips and failover_after with
//! WireGuard peers and add what IKE needs. Defaults follow a Juniper SRX
//! route-based VPN (an st0 interface): traffic selectors 0.0.0.0/0 and ::/0,
//! IKE SA lifetime 28800 s, child SA 3600 s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::checker::Checker;
use crate::key::read_secret_file;
use crate::locate::join;
use crate::prefix::parse_allowed_ip;
use crate::proposals::{default_esp_proposals, default_ike_proposals, EspProposal, IkeProposal, ProposalError};
use crate::rules;
use crate::schema::RawPeer;
use crate::selector::TrafficSelector;
use crate::types::{
    Encap, Endpoint, EndpointError, Identity, IpsecPeer, Psk, CHILD_LIFETIME_SECONDS, DEFAULT_CHILD_LIFETIME,
    DEFAULT_DPD_INTERVAL, DEFAULT_FAILOVER_AFTER, DEFAULT_IKE_LIFETIME, DEFAULT_NAT_KEEPALIVE, IKE_ENDPOINT_HINT,
    IKE_PORT, MIN_PSK_LEN,
};

/// The most entries of a list IKE counts in one octet.
const MAX_WIRE_LIST: usize = 255;

/// The most proposals of one kind (after expanding entries that name
/// several algorithms of a kind). Each is a proposal of its own on the
/// wire, 36 to 44 bytes for IKE: 16 of them with a MODP-2048 key share,
/// the nonce and NAT detection keep IKE_SA_INIT, which cannot be
/// fragmented (RFC 7383 fragments only encrypted messages), under IPv6's
/// minimum MTU of 1280 bytes. strongSwan sends one proposal with several
/// transforms of a kind instead; Causeway's IKE core offers single ones.
const MAX_PROPOSALS: usize = 16;

/// `text` after `prefix` (two ASCII characters) in either case, as
/// strongSwan compares it (`0X` is `0x`).
fn after_prefix<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..2).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &text[2..])
}

/// Decodes a PSK file's text the way strongSwan's secrets do: `0x` hex,
/// `0s` base64 (either prefix in either case, as tunctl import-swanctl
/// reads them), or else the text itself (without its trailing newline).
/// A text key that begins or ends with a blank, or runs over several
/// lines, is refused: an editor's stray space or a comment line would be
/// part of the key, and the only sign of it would be every IKE_AUTH
/// failing with the peer's AUTHENTICATION_FAILED. A key that is meant so
/// is written in hex or base64.
fn decode_psk(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = text.trim_end_matches(['\n', '\r']);
    let bytes = if let Some(hex) = after_prefix(text, "0x") {
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("a key written 0x... may hold only hex digits (0-9, a-f) after the 0x".into());
        }
        if hex.len() % 2 != 0 {
            return Err("a key written 0x... must be an even number of hex digits".into());
        }
        let nibble = |c: u8| (c as char).to_digit(16).expect("checked hex") as u8;
        Zeroizing::new(hex.as_bytes().chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect())
    } else if let Some(b64) = after_prefix(text, "0s") {
        Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "a key written 0s... must be base64".to_string())?,
        )
    } else if text.contains(['\n', '\r']) {
        return Err("the key file holds more than one line, which a text key would take whole; \
                    write the key alone, or as 0x<hex> or 0s<base64>"
            .into());
    } else if text.starts_with([' ', '\t']) || text.ends_with([' ', '\t']) {
        return Err("the key begins or ends with a blank (space or tab), which would be part of it; remove it, \
                    or write the key as 0x<hex> or 0s<base64> if it is meant"
            .into());
    } else {
        Zeroizing::new(text.as_bytes().to_vec())
    };
    if bytes.len() < MIN_PSK_LEN {
        return Err(format!(
            "the pre-shared key has {} bytes; use at least {MIN_PSK_LEN} (a short one can be guessed offline from \
             one captured IKE_AUTH): `head -c 32 /dev/urandom | base64 | sed 's/^/0s/'` makes one",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Why IPsec peers `p` and `q` cannot both be configured, when they share
/// an address. A responder files an IKE_SA_INIT from that address under
/// the first of them whose proposals fit the offer (IKE_SA_INIT names no
/// one), and at IKE_AUTH moves it to the one whose remote_id is the
/// initiator's identity only if that one accepts the suite already chosen
/// (`peer_by_identity`). So peers behind one address (gateways behind one
/// NAT) need remote_ids of their own and the same ike_proposals.
pub fn shared_address_clash(p: &IpsecPeer, q: &IpsecPeer) -> Option<String> {
    let at = |e: &Endpoint| match e {
        Endpoint::Addr(a) => a.ip().to_canonical().to_string(),
        Endpoint::Host { host, .. } => host.to_ascii_lowercase(),
    };
    let address = p.endpoints.iter().map(at).find(|a| q.endpoints.iter().any(|f| at(f) == *a))?;
    let (a, b) = (&p.name, &q.name);
    if p.remote_id == q.remote_id {
        return Some(format!(
            "IPsec peers \"{a}\" and \"{b}\" share the address {address} and the remote_id {}: a responder cannot \
             tell them apart; merge them into one peer whose local_ts and remote_ts list both sets of selectors, or \
             give each its own remote_id",
            p.remote_id
        ));
    }
    if p.ike_proposals != q.ike_proposals {
        return Some(format!(
            "IPsec peers \"{a}\" and \"{b}\" share the address {address} but not their ike_proposals: a responder \
             takes an IKE_SA_INIT from that address for the first whose proposals fit and cannot move it to the other \
             if that one refuses the suite chosen; give peers behind one address the same ike_proposals"
        ));
    }
    None
}

/// When no selector of `remote_ts` reaches `net` (none contains it or lies
/// in it): the selectors, listed for the message. A prefix routed to an
/// IPsec peer that no selector reaches has every packet dropped
/// (`outbound_outside_traffic_selectors`). Public for the registry's
/// sites, which arrive after the file was checked.
pub fn unreached(net: &ipnet::IpNet, remote_ts: &[TrafficSelector]) -> Option<String> {
    let reached = |s: &TrafficSelector| {
        s.net.addr().is_ipv6() == net.addr().is_ipv6()
            && (s.net.contains(&net.network()) || net.contains(&s.net.network()))
    };
    (!remote_ts.is_empty() && !remote_ts.iter().any(reached))
        .then(|| remote_ts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))
}

/// An IKE endpoint: host:port, or a host alone for port 500.
fn ike_endpoint(text: &str) -> Result<Endpoint, EndpointError> {
    let t = text.trim();
    // A link-local address with its zone, bracketed, without a port.
    if t.starts_with('[') && t.ends_with(']') && t.contains('%') {
        return format!("{t}:{IKE_PORT}").parse::<Endpoint>();
    }
    // An address alone means port 500; an IPv6 one may be bracketed.
    let bracketed = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).map(|r| r.parse::<std::net::Ipv6Addr>());
    let ip = match bracketed {
        Some(Ok(v6)) => Some(IpAddr::V6(v6)),
        Some(Err(_)) => return Err(EndpointError::NotV6InBrackets(t.to_string())),
        None => t.parse::<IpAddr>().ok(),
    };
    // "fd00::2:4500" is an address, but one written by someone who meant
    // port 4500 as often as not: the brackets must say which.
    if let (Some(IpAddr::V6(_)), None, Some((_, "500" | "4500"))) = (ip, bracketed, t.rsplit_once(':')) {
        return Err(EndpointError::AmbiguousV6(t.to_string()));
    }
    if let Some(ip) = ip {
        // An IPv4-mapped address is the IPv4 peer it names.
        return Ok(Endpoint::Addr(SocketAddr::new(ip.to_canonical(), IKE_PORT)));
    }
    t.parse::<Endpoint>().or_else(
        |e| {
            if t.contains(':') {
                Err(e)
            } else {
                format!("{t}:{IKE_PORT}").parse::<Endpoint>()
            }
        },
    )
}

/// Fields of a WireGuard peer that an IPsec peer must not have.
fn wireguard_only(raw: &RawPeer) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut v = Vec::new();
    if let Some(k) = &raw.public_key {
        v.push(("public_key", k.span()));
    }
    if let Some(k) = &raw.preshared_key {
        v.push(("preshared_key", k.span()));
    }
    if let Some(k) = &raw.preshared_key_file {
        v.push(("preshared_key_file", k.span()));
    }
    if let Some(k) = &raw.persistent_keepalive {
        v.push(("persistent_keepalive", k.span()));
    }
    v
}

/// Fields only an IPsec peer may have, for the error on a WireGuard peer.
pub(crate) fn ipsec_only(raw: &RawPeer) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut v = Vec::new();
    let mut add = |name: &'static str, span: Option<std::ops::Range<usize>>| {
        if let Some(s) = span {
            v.push((name, s));
        }
    };
    add("local_id", raw.local_id.as_ref().map(|x| x.span()));
    add("remote_id", raw.remote_id.as_ref().map(|x| x.span()));
    add("psk_file", raw.psk_file.as_ref().map(|x| x.span()));
    add("ike_proposals", raw.ike_proposals.first().map(|x| x.span()));
    add("esp_proposals", raw.esp_proposals.first().map(|x| x.span()));
    add("local_ts", raw.local_ts.first().map(|x| x.span()));
    add("remote_ts", raw.remote_ts.first().map(|x| x.span()));
    add("ike_lifetime", raw.ike_lifetime.as_ref().map(|x| x.span()));
    add("child_lifetime", raw.child_lifetime.as_ref().map(|x| x.span()));
    add("dpd_interval", raw.dpd_interval.as_ref().map(|x| x.span()));
    add("nat_keepalive", raw.nat_keepalive.as_ref().map(|x| x.span()));
    add("initiate", raw.initiate.as_ref().map(|x| x.span()));
    add("encap", raw.encap.as_ref().map(|x| x.span()));
    v
}

impl Checker<'_> {
    fn seconds(&mut self, field: String, v: &Option<Spanned<u32>>, default: Duration, range: (u32, u32)) -> Duration {
        match v {
            None => default,
            Some(s) if (range.0..=range.1).contains(s.get_ref()) => Duration::from_secs(u64::from(*s.get_ref())),
            Some(s) => {
                self.report(
                    s.span(),
                    field,
                    format!("expected {} to {} seconds, got {}", range.0, range.1, s.get_ref()),
                );
                default
            }
        }
    }

    fn list<T, E>(&mut self, field: &str, items: &[Spanned<String>], parse: impl Fn(&str) -> Result<T, E>) -> Vec<T>
    where
        E: std::fmt::Display,
    {
        items.iter().filter_map(|i| parse(i.get_ref()).map_err(|e| self.report(i.span(), field, e)).ok()).collect()
    }

    /// As `list`, for a list IKE sends whole and counts in one octet
    /// (proposal numbers, a TS payload's number of selectors): more than
    /// 255 entries could not be written, and a peer would refuse them.
    fn wire_list<T, E>(
        &mut self,
        field: &str,
        items: &[Spanned<String>],
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Vec<T>
    where
        E: std::fmt::Display,
    {
        if let Some(extra) = items.get(MAX_WIRE_LIST) {
            let n = items.len();
            self.report(
                extra.span(),
                field,
                format!("{n} entries: IKE counts them in one octet, so at most {MAX_WIRE_LIST}"),
            );
        }
        self.list(field, items, parse)
    }

    /// A list of proposals, each entry standing for one or more (several
    /// algorithms of a kind: every combination), at most `MAX_PROPOSALS`
    /// in all.
    fn proposal_list<T>(
        &mut self,
        field: &str,
        items: &[Spanned<String>],
        parse: impl Fn(&str) -> Result<Vec<T>, ProposalError>,
    ) -> Vec<T> {
        let mut all = Vec::new();
        for item in items {
            match parse(item.get_ref()) {
                Err(e) => self.report(item.span(), field, e),
                Ok(v) if all.len() + v.len() > MAX_PROPOSALS => {
                    let n = all.len() + v.len();
                    self.report(
                        item.span(),
                        field,
                        format!(
                            "{n} proposals, counting the combinations of each entry's algorithms: each goes on the \
                             wire as a proposal of its own, in messages Causeway does not fragment, so at most \
                             {MAX_PROPOSALS} (which keeps IKE_SA_INIT within 1280 bytes)"
                        ),
                    );
                    break;
                }
                Ok(v) => all.extend(v),
            }
        }
        all
    }

    pub(crate) fn ipsec_peer(&mut self, t: &str, span: std::ops::Range<usize>, raw: &RawPeer) -> Option<IpsecPeer> {
        let before = self.problems.len();
        for (field, s) in wireguard_only(raw) {
            let instead = match field {
                "persistent_keepalive" => {
                    "an IPsec peer holds a NAT mapping open with nat_keepalive and checks liveness with dpd_interval"
                }
                _ => "an IPsec peer authenticates with psk_file",
            };
            self.report(s, join(t, field), format!("{field} belongs to WireGuard peers; {instead}"));
        }
        let name = match &raw.name {
            Some(n) => rules::peer_name(n.get_ref())
                .map_err(|e| self.report(n.span(), join(t, "name"), e))
                .ok()
                .map(|_| n.get_ref().clone()),
            None => {
                self.report(span.clone(), t, "missing name: every peer needs one, such as name = \"dc-east\"");
                None
            }
        };
        let id = |this: &mut Self, field: &str, v: &Option<Spanned<String>>| match v {
            Some(s) => s.get_ref().parse::<Identity>().map_err(|e| this.report(s.span(), join(t, field), e)).ok(),
            None => {
                this.report(span.clone(), join(t, field), format!("missing {field}: the IKE identity, such as {field} = \"gw1.dc-east.example\" (an SRX's `local-identity`/`remote-identity`)"));
                None
            }
        };
        let local_id = id(self, "local_id", &raw.local_id);
        let remote_id = id(self, "remote_id", &raw.remote_id);
        let psk = match &raw.psk_file {
            Some(f) => read_secret_file(&self.resolve_path(f.get_ref()), Some(&self.owners))
                .map_err(|e| e.to_string())
                .and_then(|text| decode_psk(&text))
                .map_err(|e| self.report(f.span(), join(t, "psk_file"), e))
                .ok(),
            None => {
                self.report(
                    span.clone(),
                    join(t, "psk_file"),
                    "missing psk_file: the path of a file (mode 0600) holding the pre-shared key",
                );
                None
            }
        };
        let endpoints = self.list(&join(t, "endpoints"), &raw.endpoints, |e| {
            ike_endpoint(e).map_err(|e| e.describe(IKE_ENDPOINT_HINT))
        });
        let allowed_ips = self.prefixes(&join(t, "allowed_ips"), &raw.allowed_ips, parse_allowed_ip);
        let mut ike_proposals =
            self.proposal_list(&join(t, "ike_proposals"), &raw.ike_proposals, IkeProposal::parse_all);
        if raw.ike_proposals.is_empty() {
            ike_proposals = default_ike_proposals();
        }
        let mut esp_proposals =
            self.proposal_list(&join(t, "esp_proposals"), &raw.esp_proposals, EspProposal::parse_all);
        if raw.esp_proposals.is_empty() {
            esp_proposals = default_esp_proposals();
        }
        let any: Vec<TrafficSelector> = vec!["0.0.0.0/0".parse().expect("valid"), "::/0".parse().expect("valid")];
        let mut local_ts = self.wire_list(&join(t, "local_ts"), &raw.local_ts, |s| s.parse::<TrafficSelector>());
        if raw.local_ts.is_empty() {
            local_ts = any.clone();
        }
        let mut remote_ts = self.wire_list(&join(t, "remote_ts"), &raw.remote_ts, |s| s.parse::<TrafficSelector>());
        if raw.remote_ts.is_empty() {
            remote_ts = any;
        }
        // A prefix no remote selector reaches is routed to the peer and
        // then dropped, every packet (`outbound_outside_traffic_selectors`):
        // a typo in one list or the other.
        for item in &raw.allowed_ips {
            let Ok(net) = parse_allowed_ip(item.get_ref()) else { continue };
            if let Some(listed) = unreached(&net, &remote_ts) {
                self.report(
                    item.span(),
                    join(t, "allowed_ips"),
                    format!(
                        "{net} lies outside every remote_ts selector ({listed}): its packets would be routed to this \
                         peer and dropped; add it to remote_ts or correct the prefix"
                    ),
                );
            }
        }
        let ike_lifetime =
            self.seconds(join(t, "ike_lifetime"), &raw.ike_lifetime, DEFAULT_IKE_LIFETIME, (60, 86_400 * 7));
        let child_lifetime = self.seconds(
            join(t, "child_lifetime"),
            &raw.child_lifetime,
            DEFAULT_CHILD_LIFETIME,
            CHILD_LIFETIME_SECONDS,
        );
        let dpd_interval = self.seconds(join(t, "dpd_interval"), &raw.dpd_interval, DEFAULT_DPD_INTERVAL, (0, 3_600));
        let nat_keepalive =
            self.seconds(join(t, "nat_keepalive"), &raw.nat_keepalive, DEFAULT_NAT_KEEPALIVE, (0, 3_600));
        let encap = match raw.encap.as_ref().map(|e| (e.get_ref().as_str(), e.span())) {
            None | Some(("auto", _)) => Encap::Auto,
            Some(("always", _)) => Encap::Always,
            Some((other, s)) => {
                self.report(
                    s,
                    join(t, "encap"),
                    format!("expected \"auto\" (UDP only through a NAT) or \"always\", got \"{other}\""),
                );
                Encap::Auto
            }
        };
        let failover_after = match &raw.failover_after {
            None => DEFAULT_FAILOVER_AFTER,
            Some(f) => rules::failover_after(u64::from(*f.get_ref()))
                .map_err(|e| self.report(f.span(), join(t, "failover_after"), e))
                .unwrap_or(DEFAULT_FAILOVER_AFTER),
        };
        // Accepted, it would never start anything: IKE has no address to
        // start toward, and the operator would wait for an SA in vain.
        // (Only when nothing else was wrong: endpoints refused leave the
        // list empty, and that problem is the one to read.)
        let no_target = endpoints.is_empty() && self.problems.len() == before;
        if let Some(i) = raw.initiate.as_ref().filter(|i| *i.get_ref() && no_target) {
            self.report(
                i.span(),
                join(t, "initiate"),
                "true needs endpoints (no address to start IKE toward); without them the peer only answers",
            );
        }
        if self.problems.len() != before {
            return None;
        }
        Some(IpsecPeer {
            name: name?,
            initiate: raw.initiate.as_ref().map_or(!endpoints.is_empty(), |i| *i.get_ref()),
            endpoints,
            allowed_ips,
            local_id: local_id?,
            remote_id: remote_id?,
            psk: Psk(psk?),
            ike_proposals,
            esp_proposals,
            local_ts,
            remote_ts,
            ike_lifetime,
            child_lifetime,
            dpd_interval,
            nat_keepalive,
            encap,
            failover_after,
            site: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_read_as_strongswan_writes_them() {
        assert_eq!("198.18.0.1".parse::<Identity>().unwrap(), Identity::Address("198.18.0.1".parse().unwrap()));
        assert_eq!("gw1.dc-east.example".parse::<Identity>().unwrap(), Identity::Fqdn("gw1.dc-east.example".into()));
        assert_eq!("@gw1".parse::<Identity>().unwrap(), Identity::Fqdn("gw1".into()));
        assert_eq!("ops@dc-east.example".parse::<Identity>().unwrap(), Identity::Email("ops@dc-east.example".into()));
        assert!("".parse::<Identity>().is_err());
        assert!("has space".parse::<Identity>().is_err());
    }

    #[test]
    fn psk_text_forms() {
        assert_eq!(
            &*decode_psk("0x00112233445566778899aabbccddeeff\n").unwrap(),
            &(0..16).map(|i| i * 0x11).collect::<Vec<u8>>()
        );
        assert_eq!(decode_psk("0sAAAAAAAAAAAAAAAAAAAAAA==").unwrap().len(), 16);
        assert_eq!(&*decode_psk("a long enough passphrase\n").unwrap(), b"a long enough passphrase");
        assert!(decode_psk("short").unwrap_err().contains("at least 16"));
        assert!(decode_psk("0x123").unwrap_err().contains("even number"));
        assert!(decode_psk("0xzz22334455667788").unwrap_err().contains("only hex digits"));
        assert!(decode_psk("0s!!!!").is_err());
        // Either case of the prefix, as strongSwan reads it.
        let hex = "00112233445566778899AABBCCDDEEFF";
        assert_eq!(decode_psk(&format!("0X{hex}")).unwrap(), decode_psk(&format!("0x{hex}")).unwrap());
        assert_eq!(decode_psk("0SAAAAAAAAAAAAAAAAAAAAAA==").unwrap().len(), 16);
        assert_eq!(&*decode_psk("é a long enough passphrase").unwrap(), "é a long enough passphrase".as_bytes());
        // Blanks around a text key, or a second line, are refused: no
        // peer's key has them by accident of the file.
        for text in ["a long enough passphrase \n", "\ta long enough passphrase", "a long enough passphrase\n# old\n"] {
            assert!(decode_psk(text).unwrap_err().contains("0x<hex> or 0s<base64>"), "{text:?}");
        }
        assert_eq!(&*decode_psk("a long enough passphrase\r\n").unwrap(), b"a long enough passphrase");
        assert_eq!(&*decode_psk("a long enough passphrase\n\n").unwrap(), b"a long enough passphrase");
    }

    #[test]
    fn endpoints_default_to_port_500() {
        assert_eq!(ike_endpoint("198.18.1.2").unwrap(), Endpoint::Addr("198.18.1.2:500".parse().unwrap()));
        assert_eq!(ike_endpoint("198.18.1.2:4500").unwrap(), Endpoint::Addr("198.18.1.2:4500".parse().unwrap()));
        assert_eq!(ike_endpoint("fd00::2").unwrap(), Endpoint::Addr("[fd00::2]:500".parse().unwrap()));
        assert_eq!(ike_endpoint("[fd00::2]").unwrap(), Endpoint::Addr("[fd00::2]:500".parse().unwrap()));
        assert_eq!(ike_endpoint("[fd00::2]:4500").unwrap(), Endpoint::Addr("[fd00::2]:4500".parse().unwrap()));
        assert!(ike_endpoint("[fd00::2").is_err());
        assert!(ike_endpoint("[198.18.1.2]").is_err(), "brackets are for IPv6");
        assert_eq!(ike_endpoint("fd00::2:4500"), Err(EndpointError::AmbiguousV6("fd00::2:4500".into())));
        assert_eq!(ike_endpoint("[fd00::2:4500]").unwrap(), Endpoint::Addr("[fd00::2:4500]:500".parse().unwrap()));
        assert_eq!(ike_endpoint("[fd00::2]:500").unwrap(), Endpoint::Addr("[fd00::2]:500".parse().unwrap()));
        assert!(matches!(ike_endpoint("198.18.2.256"), Err(EndpointError::NotIpv4(_))));
        assert_eq!(ike_endpoint("[fe80::1%eth0]").unwrap(), Endpoint::Host { host: "fe80::1%eth0".into(), port: 500 });
        assert!(
            matches!(ike_endpoint("[fe80::1%2]").unwrap(), Endpoint::Addr(std::net::SocketAddr::V6(a)) if a.scope_id() == 2)
        );
        assert_eq!(ike_endpoint("::ffff:198.18.1.2").unwrap(), Endpoint::Addr("198.18.1.2:500".parse().unwrap()));
        assert_eq!(
            ike_endpoint("srx.dc-east.example").unwrap(),
            Endpoint::Host { host: "srx.dc-east.example".into(), port: 500 }
        );
    }

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";

    /// A configuration in a private directory with a PSK file of `mode`.
    fn setup(peers: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("dc-east.psk");
        std::fs::write(&psk, "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(mode)).unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{peers}")).unwrap();
        // The private key is inline: the file must be private too.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, file)
    }

    const SRX: &str = r#"[[peer]]
name = "dc-east"
protocol = "ipsec"
endpoints = ["198.18.1.2"]
allowed_ips = ["10.1.0.0/16"]
local_id = "gw1.primary.example"
remote_id = "198.18.1.2"
psk_file = "dc-east.psk"
"#;

    #[test]
    fn an_srx_style_peer_gets_the_srx_defaults() {
        let (_d, file) = setup(SRX, 0o600);
        let c = crate::load(&file).unwrap();
        assert!(c.peers.is_empty());
        let p = &c.ipsec_peers[0];
        assert_eq!(p.name, "dc-east");
        assert_eq!(p.endpoints, vec![Endpoint::Addr("198.18.1.2:500".parse().unwrap())]);
        assert_eq!(p.remote_id, Identity::Address("198.18.1.2".parse().unwrap()));
        assert_eq!(p.psk.0.len(), 32);
        assert_eq!(p.ike_lifetime, Duration::from_secs(28_800));
        assert_eq!(p.child_lifetime, Duration::from_secs(3_600));
        assert_eq!(p.local_ts.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["0.0.0.0/0", "::/0"]);
        assert_eq!(p.ike_proposals[0].to_string(), "aes256gcm16-prfsha256-x25519");
        assert_eq!(p.encap, Encap::Auto);
        assert!(p.initiate, "a peer with an address is initiated");
        assert_eq!(c.interface.mtu, crate::DEFAULT_MTU_IPSEC, "room for ESP in UDP with AES-CBC");
    }

    #[test]
    fn initiate_needs_endpoints() {
        let peer = "[[peer]]\nname = \"west\"\nprotocol = \"ipsec\"\nallowed_ips = [\"10.2.0.0/16\"]\n\
                    local_id = \"gw1.primary.example\"\nremote_id = \"west.example\"\npsk_file = \"dc-east.psk\"\n";
        let (_d, file) = setup(&format!("{SRX}\n{peer}initiate = false\n"), 0o600);
        assert!(crate::load(&file).is_ok(), "a peer that only answers");
        let (_d, file) = setup(&format!("{SRX}\n{peer}initiate = true\n"), 0o600);
        let e = crate::load(&file).unwrap_err();
        let found: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("peer[2].initiate: true needs endpoints"), "{found:#?}");
    }

    #[test]
    fn only_one_ipsec_peer_may_leave_out_its_endpoints() {
        let roaming = |name: &str, net: &str| {
            format!(
                "[[peer]]\nname = \"{name}\"\nprotocol = \"ipsec\"\nallowed_ips = [\"{net}\"]\n\
                 local_id = \"gw1.primary.example\"\nremote_id = \"{name}.example\"\npsk_file = \"dc-east.psk\"\n\n"
            )
        };
        let one = format!("{SRX}\n{}", roaming("west", "10.2.0.0/16"));
        let (_d, file) = setup(&one, 0o600);
        assert!(crate::load(&file).is_ok(), "one without endpoints is fine");
        let two = format!("{one}{}", roaming("north", "10.3.0.0/16"));
        let (_d, file) = setup(&two, 0o600);
        let e = crate::load(&file).unwrap_err();
        let found: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("peer[3].endpoints:") && found[0].contains("neither has peer[2]"), "{found:#?}");
    }

    #[test]
    fn two_peers_at_one_address_need_their_own_identities() {
        let second = |remote_id: &str, endpoint: &str| {
            format!(
                "\n[[peer]]\nname = \"dc-east-2\"\nprotocol = \"ipsec\"\nendpoints = [\"{endpoint}\"]\n\
                 allowed_ips = [\"10.2.0.0/16\"]\nlocal_id = \"gw1.primary.example\"\nremote_id = \"{remote_id}\"\n\
                 psk_file = \"dc-east.psk\"\n"
            )
        };
        for endpoint in ["198.18.1.2:4500", "::ffff:198.18.1.2"] {
            let (_d, file) = setup(&format!("{SRX}{}", second("198.18.1.2", endpoint)), 0o600);
            let e = crate::load(&file).unwrap_err();
            let found: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
            assert_eq!(found.len(), 1, "{found:#?}");
            assert!(found[0].contains(":14: peer[2].endpoints:") && found[0].contains("cannot tell"), "{found:#?}");
        }
        let (_d, file) = setup(&format!("{SRX}{}", second("gw2.dc-east.example", "198.18.1.2")), 0o600);
        assert!(crate::load(&file).is_ok(), "another identity at the same address");
        // ... but with other proposals the responder could not move an SA
        // filed under the first to it.
        let other =
            format!("{}ike_proposals = [\"aes256-sha256-modp2048\"]\n", second("gw2.dc-east.example", "198.18.1.2"));
        let (_d, file) = setup(&format!("{SRX}{other}"), 0o600);
        let e = crate::load(&file).unwrap_err().to_string();
        assert!(e.contains("not their ike_proposals"), "{e}");
        let (_d, file) = setup(&format!("{SRX}{}", second("198.18.1.2", "198.18.1.3")), 0o600);
        assert!(crate::load(&file).is_ok(), "the same identity at another address");
    }

    #[test]
    fn a_wireguard_keepalive_on_an_ipsec_peer_points_to_its_own_settings() {
        let (_d, file) = setup(&format!("{SRX}persistent_keepalive = 25\n"), 0o600);
        let e = crate::load(&file).unwrap_err();
        let p = &e.problems()[0];
        assert_eq!((p.line, p.field.as_str()), (12, "peer[1].persistent_keepalive"), "{e}");
        assert!(p.message.contains("nat_keepalive") && p.message.contains("dpd_interval"), "{e}");
    }

    #[test]
    fn a_readable_psk_file_is_refused_with_its_line() {
        let (_d, file) = setup(SRX, 0o644);
        let e = crate::load(&file).unwrap_err();
        let p = &e.problems()[0];
        assert_eq!((p.line, p.field.as_str()), (11, "peer[1].psk_file"));
        assert!(p.message.contains("chmod 600"), "{}", p.message);
    }

    #[test]
    fn every_mistake_names_its_line_and_field() {
        let peers = format!(
            "{}ike_proposals = [\"aes256gcm16-prfsha256-modp1024\"]\nencap = \"sometimes\"\npublic_key = \"{PUB_B}\"\n\n\
             [[peer]]\nname = \"dc-east\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.1.2.0/24\"]\nlocal_id = \"x\"\n",
            SRX
        );
        let (_d, file) = setup(&peers, 0o600);
        let e = crate::load(&file).unwrap_err();
        let got: Vec<_> = e.problems().iter().map(|p| (p.line, p.field.clone())).collect();
        assert_eq!(
            got,
            [
                (12, "peer[1].ike_proposals".to_string()),
                (13, "peer[1].encap".to_string()),
                (14, "peer[1].public_key".to_string()),
                (20, "peer[2].local_id".to_string()),
            ],
            "{e}"
        );
    }

    #[test]
    fn selectors_may_name_a_protocol_and_ports() {
        let (_d, file) =
            setup(&format!("{SRX}local_ts = [\"10.0.0.0/16[tcp]\"]\nremote_ts = [\"10.1.0.0/16[tcp/443]\"]\n"), 0o600);
        let p = crate::load(&file).unwrap().ipsec_peers.remove(0);
        assert_eq!(
            (p.local_ts[0].to_string(), p.remote_ts[0].to_string()),
            ("10.0.0.0/16[tcp]".into(), "10.1.0.0/16[tcp/443]".into())
        );
        let (_d, file) = setup(&format!("{SRX}remote_ts = [\"10.1.0.0/16\", \"10.2.0.0/16[any/53]\"]\n"), 0o600);
        let e = crate::load(&file).unwrap_err();
        let p = &e.problems()[0];
        assert_eq!((p.line, p.field.as_str()), (12, "peer[1].remote_ts"), "{e}");
        assert!(p.message.contains("a port needs a protocol"), "{e}");
    }

    #[test]
    fn a_prefix_no_remote_selector_reaches_is_refused() {
        let (_d, file) = setup(&format!("{SRX}remote_ts = [\"10.9.0.0/16\", \"fd00:9::/32\"]\n"), 0o600);
        let e = crate::load(&file).unwrap_err();
        let p = &e.problems()[0];
        assert_eq!((p.line, p.field.as_str()), (8, "peer[1].allowed_ips"), "{e}");
        assert!(p.message.contains("10.1.0.0/16 lies outside every remote_ts selector"), "{e}");
        // Overlapping either way is fine: a wider selector, or a wider
        // prefix of which the selector takes a part.
        for ts in ["10.0.0.0/8", "10.1.2.0/24[tcp/443]"] {
            let (_d, file) = setup(&format!("{SRX}remote_ts = [\"{ts}\"]\n"), 0o600);
            assert!(crate::load(&file).is_ok(), "{ts}");
        }
    }

    #[test]
    fn lists_ike_counts_in_one_octet_stop_at_255() {
        let list = |n: usize, each: &dyn Fn(usize) -> String| {
            (0..n).map(|i| format!("\"{}\"", each(i))).collect::<Vec<_>>().join(", ")
        };
        // Inside the peer's allowed_ips, which remote_ts must reach.
        let prefix = |i: usize| format!("10.1.{}.{}/32", i / 256, i % 256);
        for (key, each, most) in [
            ("local_ts", &prefix as &dyn Fn(usize) -> String, 255),
            ("remote_ts", &prefix, 255),
            ("esp_proposals", &|_| "aes256gcm16".to_string(), 16),
            ("ike_proposals", &|_| "aes256gcm16-prfsha256-x25519".to_string(), 16),
        ] {
            let (_d, file) = setup(&format!("{SRX}{key} = [{}]\n", list(most, each)), 0o600);
            assert!(crate::load(&file).is_ok(), "{most} {key} are fine");
            let (_d, file) = setup(&format!("{SRX}{key} = [{}]\n", list(most + 1, each)), 0o600);
            let e = crate::load(&file).unwrap_err();
            let p = &e.problems()[0];
            assert_eq!((p.line, p.field.as_str()), (12, format!("peer[1].{key}").as_str()), "{e}");
            assert!(p.message.starts_with(&format!("{} ", most + 1)), "{e}");
            assert!(p.message.contains(&format!("at most {most}")), "{e}");
        }
        // One entry naming several algorithms of a kind counts each combination.
        let many = "aes256gcm16-aes128gcm16-prfsha256-prfsha384-ecp256-ecp384-x25519";
        let (_d, file) = setup(&format!("{SRX}ike_proposals = [\"{many}\", \"{many}\"]\n"), 0o600);
        let e = crate::load(&file).unwrap_err().to_string();
        assert!(e.contains("24 proposals") && e.contains("1280 bytes"), "{e}");
    }

    #[test]
    fn names_and_prefixes_are_unique_across_protocols() {
        let peers =
            format!("{SRX}\n[[peer]]\nname = \"dc-east\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.1.2.0/24\"]\n");
        let (_d, file) = setup(&peers, 0o600);
        let e = crate::load(&file).unwrap_err().to_string();
        assert!(e.contains("name \"dc-east\" is already used by peer[1]"), "{e}");
        assert!(e.contains("10.1.2.0/24 lies inside 10.1.0.0/16 of peer[1] (dc-east)"), "{e}");
    }

    #[test]
    fn wireguard_may_not_listen_on_an_ipsec_port() {
        let (_d, file) = setup(SRX, 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        for port in [500, 4500] {
            std::fs::write(&file, text.replacen("[interface]\n", &format!("[interface]\nlisten_port = {port}\n"), 1))
                .unwrap();
            let e = crate::load(&file).unwrap_err();
            let p = &e.problems()[0];
            assert_eq!((e.problems().len(), p.line, p.field.as_str()), (1, 2, "interface.listen_port"), "{e}");
            assert!(p.message.starts_with(&format!("{port} is a port of IPsec")), "{}", p.message);
        }
        // Without IPsec peers the ports are WireGuard's to take.
        std::fs::write(&file, format!("[interface]\nlisten_port = 4500\nprivate_key = \"{KEY_A}\"\n")).unwrap();
        assert_eq!(crate::load(&file).unwrap().interface.listen_port, 4500);
    }

    // Whoever may write the file may change the keys and peers: refused,
    // whatever it holds, before anything in it is read for use. A group
    // write bit counts unless the group is root's.
    #[test]
    fn a_configuration_others_may_write_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (_d, file) = setup(SRX, 0o600);
        let chmod = |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let writable = |mode: u32| {
            let e = crate::load(&file).unwrap_err().to_string();
            e.contains(&format!("may write it (mode {mode:03o})")) && e.contains("chmod go-w")
        };
        for mode in [0o602, 0o666] {
            chmod(mode);
            assert!(writable(mode), "{mode:o}");
        }
        chmod(0o620);
        if std::fs::metadata(&file).unwrap().gid() == 0 {
            // Refused only for the key written in it, which the group may
            // read; root's group may write.
            assert!(!writable(0o620));
            if std::os::unix::fs::chown(&file, None, Some(65534)).is_ok() {
                assert!(writable(0o620), "a group other than root's");
            }
        } else {
            assert!(writable(0o620));
        }
        chmod(0o600);
        assert!(crate::load(&file).is_ok());
    }

    #[test]
    fn psks_compare_by_value() {
        let a = Psk(Zeroizing::new(b"0123456789abcdef".to_vec()));
        assert_eq!(a, a.clone());
        assert_ne!(a, Psk(Zeroizing::new(b"0123456789abcdeF".to_vec())));
        assert_eq!(format!("{a:?}"), "Psk(<16 bytes>)");
    }
}
