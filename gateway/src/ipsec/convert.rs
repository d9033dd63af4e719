//! From the operator's words to the protocol cores' types: a configured
//! IPsec peer to the IKE core's `PeerConfig`, and a negotiated child SA's
//! keys to the ESP core's SAs the data plane installs.

use std::net::IpAddr;

use causeway_config::proposals::{self, DhGroup, Encryption, Prf};
use causeway_config::{Encap, Identity, IpsecPeer};
use causeway_dataplane::ipsec::ChildSa;
use causeway_dataplane::selectors::{Selector, Selectors};
use causeway_dataplane::session::Carrier;
use causeway_esp::{Cipher, InboundSa, OutboundSa, SaKeys};
use causeway_ikev2::crypto::{DhGroup as IkeGroup, EncrAlg, IkeSuite, IntegAlg, PrfAlg};
use causeway_ikev2::{ChildKeys, EspCipher, EspProposal, PeerConfig, TrafficSelector};

/// Both ends rarely rekey at once when up to this share of a lifetime is
/// taken off at random (strongSwan's rand_time plays the same part).
pub const REKEY_JITTER_PERCENT: u8 = 10;

fn group(g: DhGroup) -> IkeGroup {
    match g {
        DhGroup::Modp2048 => IkeGroup::Modp2048,
        DhGroup::Ecp256 => IkeGroup::Ecp256,
        DhGroup::Ecp384 => IkeGroup::Ecp384,
        DhGroup::Curve25519 => IkeGroup::Curve25519,
    }
}

fn ike_suite(p: &proposals::IkeProposal) -> IkeSuite {
    let encr = match p.encryption {
        Encryption::AesGcm16 { key_bits } => EncrAlg::AesGcm16 { key_bits },
        Encryption::AesCbc { key_bits } => EncrAlg::AesCbc { key_bits },
    };
    let prf = match p.prf {
        Prf::HmacSha256 => PrfAlg::HmacSha256,
        Prf::HmacSha384 => PrfAlg::HmacSha384,
    };
    IkeSuite { encr, prf, integ: p.integrity.map(|_| IntegAlg::HmacSha256_128), dh: group(p.group) }
}

fn esp_proposal(p: &proposals::EspProposal) -> EspProposal {
    let cipher = match p.encryption {
        Encryption::AesGcm16 { key_bits } => EspCipher::AesGcm16 { key_bits },
        Encryption::AesCbc { key_bits } => EspCipher::AesCbcHmacSha256 { key_bits },
    };
    EspProposal { cipher, dh: p.group.map(group), esn: false }
}

fn identity(id: &Identity) -> causeway_ikev2::Identity {
    match id {
        Identity::Address(IpAddr::V4(a)) => causeway_ikev2::Identity::Ipv4(*a),
        Identity::Address(IpAddr::V6(a)) => causeway_ikev2::Identity::Ipv6(*a),
        Identity::Fqdn(s) => causeway_ikev2::Identity::Fqdn(s.clone()),
        Identity::Email(s) => causeway_ikev2::Identity::Email(s.clone()),
    }
}

fn selectors(configured: &[causeway_config::TrafficSelector]) -> Vec<TrafficSelector> {
    configured
        .iter()
        .map(|c| TrafficSelector {
            ip_proto: c.proto,
            start_port: c.ports.0,
            end_port: c.ports.1,
            ..TrafficSelector::subnet(c.net.network(), c.net.prefix_len())
        })
        .collect()
}

/// The IKE core's view of a configured peer. `remote_addrs` are the
/// peer's resolved endpoints: a responder accepts IKE only from them
/// (none: from anywhere, for a peer that always initiates).
/// `raw_esp`: whether raw ESP can carry the peer's SAs here; without it
/// they are negotiated for UDP whatever `encap` says.
pub fn peer_config(p: &IpsecPeer, remote_addrs: Vec<IpAddr>, raw_esp: bool) -> PeerConfig {
    PeerConfig {
        local_id: identity(&p.local_id),
        remote_id: identity(&p.remote_id),
        psk: p.psk.0.clone(),
        ike_proposals: p.ike_proposals.iter().map(ike_suite).collect(),
        esp_proposals: p.esp_proposals.iter().map(esp_proposal).collect(),
        local_ts: selectors(&p.local_ts),
        remote_ts: selectors(&p.remote_ts),
        remote_addrs,
        any_address: p.endpoints.is_empty(),
        ike_lifetime: p.ike_lifetime,
        child_lifetime: p.child_lifetime,
        rekey_jitter_percent: REKEY_JITTER_PERCENT,
        dpd_interval: p.dpd_interval,
        initiate: p.initiate,
        encap_always: p.encap == Encap::Always || !raw_esp,
    }
}

/// Whether a peer's SAs must be negotiated anew for `new`: what IKE agreed
/// on with the peer changed. Lifetimes and the liveness interval apply
/// from the next rekey or check, routes at once; new endpoints are tried
/// when the SA in use fails.
pub fn needs_new_sas(old: &IpsecPeer, new: &IpsecPeer) -> bool {
    old.local_id != new.local_id
        || old.remote_id != new.remote_id
        || old.psk != new.psk
        || old.ike_proposals != new.ike_proposals
        || old.esp_proposals != new.esp_proposals
        || old.local_ts != new.local_ts
        || old.remote_ts != new.remote_ts
        || old.encap != new.encap
}

/// An IKE SA's algorithms in strongSwan's notation, as operators read them.
pub fn suite_name(s: &IkeSuite) -> String {
    let encr = match s.encr {
        EncrAlg::AesGcm16 { key_bits } => format!("aes{key_bits}gcm16"),
        EncrAlg::AesCbc { key_bits } => format!("aes{key_bits}"),
    };
    let integ = if s.integ.is_some() { "-sha256" } else { "" };
    let prf = match s.prf {
        PrfAlg::HmacSha256 => "prfsha256",
        PrfAlg::HmacSha384 => "prfsha384",
    };
    let dh = match s.dh {
        IkeGroup::Modp2048 => "modp2048",
        IkeGroup::Ecp256 => "ecp256",
        IkeGroup::Ecp384 => "ecp384",
        IkeGroup::Curve25519 => "x25519",
    };
    format!("{encr}{integ}-{prf}-{dh}")
}

fn esp_cipher(c: EspCipher) -> Cipher {
    match c {
        EspCipher::AesGcm16 { key_bits } => Cipher::AesGcm16 { key_bits },
        EspCipher::AesCbcHmacSha256 { key_bits } => Cipher::AesCbcHmacSha256 { key_bits },
    }
}

/// The data plane's SA pair for negotiated keys and traffic selectors
/// (`local` ours, `remote` the peer's); `roams` as IKE's `ChildUp` says.
pub fn child_sa(
    keys: &ChildKeys,
    encap: bool,
    roams: bool,
    local: &[TrafficSelector],
    remote: &[TrafficSelector],
) -> Result<ChildSa, causeway_esp::Error> {
    let cipher = esp_cipher(keys.cipher);
    // Copies of the key material (wiped when dropped): the event keeps its
    // own for the key log.
    let outbound = OutboundSa::new(SaKeys { spi: keys.spi_out, cipher, keymat: keys.keymat_out.clone() })?;
    let inbound = InboundSa::new(SaKeys { spi: keys.spi_in, cipher, keymat: keys.keymat_in.clone() })?;
    let carrier = if encap { Carrier::EspInUdp } else { Carrier::RawEsp };
    let plane = |list: &[TrafficSelector]| {
        list.iter()
            .map(|t| Selector { proto: t.ip_proto, ports: (t.start_port, t.end_port), start: t.start, end: t.end })
            .collect()
    };
    let sa = ChildSa::new(outbound, inbound, carrier).with_roaming(roams);
    Ok(sa.with_selectors(Selectors::new(plane(local), plane(remote))))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPsec peer `name` at 198.18.0.2 (local ID 198.18.0.1, a PSK in a
    /// 0600 file), with `extra` lines of its table, as the file loads it.
    pub(crate) fn parsed_peer(name: &str, extra: &str) -> IpsecPeer {
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("peer.psk");
        std::fs::write(&psk, "0x00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&psk, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = format!(
            "[interface]\nprivate_key = \"CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=\"\n\n[[peer]]\nname = \"{name}\"\n\
             protocol = \"ipsec\"\nendpoints = [\"198.18.0.2\"]\nlocal_id = \"198.18.0.1\"\npsk_file = \"{}\"\n{extra}",
            psk.display()
        );
        causeway_config::parse(&text, &dir.path().join("gw.toml")).unwrap().ipsec_peers.remove(0)
    }

    fn peer(extra: &str) -> IpsecPeer {
        parsed_peer("east", &format!("remote_id = \"198.18.0.2\"\n{extra}"))
    }

    #[test]
    fn without_raw_esp_the_sas_are_negotiated_for_udp() {
        let auto = peer("");
        assert_eq!(auto.encap, Encap::Auto);
        assert!(!peer_config(&auto, vec![], true).encap_always, "raw ESP where there is no NAT");
        assert!(peer_config(&auto, vec![], false).encap_always, "no raw socket: UDP");
        assert!(peer_config(&peer("encap = \"always\"\n"), vec![], true).encap_always);
    }

    #[test]
    fn only_changes_to_what_was_negotiated_renegotiate() {
        let base = peer("");
        for (extra, anew) in [
            ("dpd_interval = 10\n", false),
            ("child_lifetime = 600\n", false),
            ("allowed_ips = [\"10.9.0.0/16\"]\n", false),
            ("remote_ts = [\"10.9.0.0/16\"]\n", true),
            ("remote_ts = [\"0.0.0.0/0[tcp]\", \"::/0\"]\n", true),
            ("esp_proposals = [\"aes128gcm16\"]\n", true),
            ("encap = \"always\"\n", true),
        ] {
            assert_eq!(needs_new_sas(&base, &peer(extra)), anew, "{extra}");
        }
        let mut other_key = base.clone();
        other_key.psk = causeway_config::Psk(zeroize::Zeroizing::new(b"another key of plenty of bytes".to_vec()));
        assert!(needs_new_sas(&base, &other_key));
    }

    #[test]
    fn configured_protocols_and_ports_are_proposed() {
        let p = peer("local_ts = [\"10.1.0.0/16[tcp]\"]\nremote_ts = [\"10.2.0.0/16[tcp/443]\", \"fd00:2::/64\"]\n");
        let c = peer_config(&p, vec![], true);
        let shown = |list: &[TrafficSelector]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(shown(&c.local_ts), ["10.1.0.0/16[tcp]"]);
        assert_eq!(shown(&c.remote_ts), ["10.2.0.0/16[tcp/443]", "fd00:2::/64"]);
    }

    #[test]
    fn the_configured_words_become_the_negotiated_types() {
        let p: proposals::IkeProposal = "aes256-sha256-prfsha384-modp2048".parse().unwrap();
        let s = ike_suite(&p);
        assert_eq!(s.encr, EncrAlg::AesCbc { key_bits: 256 });
        assert_eq!(s.prf, PrfAlg::HmacSha384);
        assert_eq!(s.integ, Some(IntegAlg::HmacSha256_128));
        assert_eq!(s.dh, IkeGroup::Modp2048);
        assert_eq!(suite_name(&s), "aes256-sha256-prfsha384-modp2048");
        let e: proposals::EspProposal = "aes128gcm16-x25519".parse().unwrap();
        let e = esp_proposal(&e);
        assert_eq!(e.cipher, EspCipher::AesGcm16 { key_bits: 128 });
        assert_eq!(e.dh, Some(IkeGroup::Curve25519));
        assert_eq!(esp_cipher(e.cipher), Cipher::AesGcm16 { key_bits: 128 });
        let ts = selectors(&["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(ts[0].start, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(ts[0].end, "10.1.255.255".parse::<IpAddr>().unwrap());
    }
}
