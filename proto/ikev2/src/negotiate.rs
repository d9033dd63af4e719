//! Proposal selection and traffic selector narrowing (RFC 7296 §2.7, §2.9),
//! and the strongSwan-style names of offers for log lines.
//!
//! Invariants: a responder picks the first of the peer's proposals that
//! matches one of ours, and answers with exactly one transform per type,
//! all taken from that proposal; a transform with an unknown attribute
//! never matches; an initiator accepts an answer only if it is one of the
//! suites it offered.

use crate::config::EspProposal;
use crate::crypto::{DhGroup, IkeSuite, IntegAlg, PrfAlg};
use crate::ids::{dh, encr, esn, integ, prf, protocol, transform_type as tt};
use crate::wire::proposal::{Proposal, Transform};
use crate::wire::traffic_selector::{TrafficSelector, MAX_SELECTORS};

fn ike_transforms(s: &IkeSuite) -> Vec<Transform> {
    let mut t =
        vec![Transform::new(tt::ENCR, s.encr.id(), Some(s.encr.key_bits())), Transform::new(tt::PRF, s.prf.id(), None)];
    if let Some(i) = s.integ {
        t.push(Transform::new(tt::INTEG, i.id(), None));
    }
    t.push(Transform::new(tt::DH, s.dh.id(), None));
    t
}

/// Our IKE proposals, one per suite (`spi`: empty in IKE_SA_INIT, the new
/// SPI in an IKE SA rekey).
pub(crate) fn ike_offer(suites: &[IkeSuite], spi: &[u8]) -> Vec<Proposal> {
    suites
        .iter()
        .enumerate()
        .map(|(i, s)| Proposal {
            num: i as u8 + 1,
            protocol: protocol::IKE,
            spi: spi.to_vec(),
            transforms: ike_transforms(s),
        })
        .collect()
}

fn has(p: &Proposal, kind: u8, id: u16, key_len: Option<u16>) -> bool {
    p.of_type(kind).any(|t| t.id == id && t.key_len == key_len && !t.unknown_attr)
}

/// Whether the peer's proposal has no integrity transform but "none".
fn no_integ(p: &Proposal) -> bool {
    p.of_type(tt::INTEG).all(|t| t.id == integ::NONE)
}

fn ike_matches(p: &Proposal, s: &IkeSuite) -> bool {
    p.protocol == protocol::IKE
        && has(p, tt::ENCR, s.encr.id(), Some(s.encr.key_bits()))
        && has(p, tt::PRF, s.prf.id(), None)
        && match s.integ {
            Some(i) => has(p, tt::INTEG, i.id(), None),
            None => no_integ(p),
        }
        && has(p, tt::DH, s.dh.id(), None)
}

/// The responder's choice: the first peer proposal matching one of our
/// suites, preferring within it a suite whose group is `ke_group` (so a
/// KE the peer already sent can be used). Returns the answer proposal.
pub(crate) fn choose_ike(offered: &[Proposal], ours: &[IkeSuite], ke_group: u16) -> Option<(IkeSuite, Proposal)> {
    for p in offered {
        let mut matching = ours.iter().filter(|s| ike_matches(p, s));
        let Some(first) = matching.next() else { continue };
        let suite = std::iter::once(first).chain(matching).find(|s| s.dh.id() == ke_group).unwrap_or(first);
        let answer =
            Proposal { num: p.num, protocol: protocol::IKE, spi: p.spi.clone(), transforms: ike_transforms(suite) };
        return Some((*suite, answer));
    }
    None
}

/// An answer's transforms, for an AEAD suite (`aead`) but an integrity
/// "none", which RFC 7296 §3.3 lets an AEAD proposal carry or leave out:
/// an answer is one transform of each type either way. Beside a real
/// integrity algorithm a "none" still counts, as the second one it is.
fn counted(p: &Proposal, aead: bool) -> usize {
    p.transforms.iter().filter(|t| !(aead && t.kind == tt::INTEG && t.id == integ::NONE)).count()
}

/// Why the peer's `nonce` cannot key the negotiated `prf` (RFC 7296
/// §2.10), if it cannot; a nonce is otherwise only checked to be 16 to
/// 256 octets long when it is parsed.
pub(crate) fn short_nonce(nonce: &[u8], prf: PrfAlg) -> Option<String> {
    let need = prf.min_nonce_len();
    (nonce.len() < need).then(|| format!("a nonce of {} octets, shorter than the {need} its prf needs", nonce.len()))
}

/// The suite an IKE answer names, if it is exactly one of `ours`.
pub(crate) fn accept_ike(answer: &[Proposal], ours: &[IkeSuite]) -> Option<IkeSuite> {
    let [p] = answer else { return None };
    ours.iter().find(|s| ike_matches(p, s) && counted(p, s.integ.is_none()) == ike_transforms(s).len()).copied()
}

fn esp_transforms(e: &EspProposal, with_dh: bool) -> Vec<Transform> {
    let mut t = e.cipher.transforms();
    if let (true, Some(g)) = (with_dh, e.dh) {
        t.push(Transform::new(tt::DH, g.id(), None));
    }
    t.push(Transform::new(tt::ESN, esn::NO, None));
    t
}

/// Our ESP proposals with our inbound SPI; `with_dh` in CREATE_CHILD_SA
/// (IKE_AUTH's child uses the IKE SA's key exchange, RFC 7296 §1.2).
pub(crate) fn esp_offer(ours: &[EspProposal], spi_in: u32, with_dh: bool) -> Vec<Proposal> {
    ours.iter()
        .enumerate()
        .map(|(i, e)| Proposal {
            num: i as u8 + 1,
            protocol: protocol::ESP,
            spi: spi_in.to_be_bytes().to_vec(),
            transforms: esp_transforms(e, with_dh),
        })
        .collect()
}

fn esp_matches(p: &Proposal, e: &EspProposal, with_dh: bool) -> bool {
    let cipher_ok =
        e.cipher.transforms().iter().all(|t| has(p, t.kind, t.id, t.key_len)) && (!e.cipher.is_aead() || no_integ(p));
    let esn_ok = p.of_type(tt::ESN).next().is_none() || has(p, tt::ESN, esn::NO, None);
    let dh_ok = !with_dh
        || match e.dh {
            Some(g) => has(p, tt::DH, g.id(), None),
            None => p.of_type(tt::DH).all(|t| t.id == dh::NONE),
        };
    p.protocol == protocol::ESP && p.spi.len() == 4 && cipher_ok && esn_ok && dh_ok
}

fn spi_of(p: &Proposal) -> Option<u32> {
    Some(u32::from_be_bytes(<[u8; 4]>::try_from(p.spi.as_slice()).ok()?))
}

/// The responder's ESP choice: (ours, the peer's SPI, the answer without
/// its SPI filled in — the caller puts ours there). Of our proposals that
/// match the first acceptable one offered, one in the group of the KE the
/// peer sent (`ke_group`) is preferred, as `choose_ike` prefers it: the
/// first alone would cost an INVALID_KE_PAYLOAD round trip when the
/// peer's proposal lists several groups.
pub(crate) fn choose_esp(
    offered: &[Proposal],
    ours: &[EspProposal],
    with_dh: bool,
    ke_group: Option<u16>,
) -> Option<(EspProposal, u32, Proposal)> {
    for p in offered {
        let mut matching = ours.iter().filter(|e| esp_matches(p, e, with_dh));
        let Some(first) = matching.next() else { continue };
        let e = std::iter::once(first)
            .chain(matching)
            .find(|e| e.dh.is_some_and(|g| Some(g.id()) == ke_group))
            .unwrap_or(first);
        let answer =
            Proposal { num: p.num, protocol: protocol::ESP, spi: vec![], transforms: esp_transforms(e, with_dh) };
        return Some((*e, spi_of(p)?, answer));
    }
    None
}

/// The ESP proposal an answer names, if it is exactly one of `ours`, with
/// the peer's SPI. A group the answer names where no key exchange took
/// place (IKE_AUTH, or a "none" group beside a proposal of ours without
/// one) is not counted: RFC 7296 §1.2 only
/// says it SHOULD be left out, and strongSwan ignores it there too
/// (PROPOSAL_SKIP_KE), so a peer that echoes its PFS group into IKE_AUTH
/// still gets its child SA.
pub(crate) fn accept_esp(answer: &[Proposal], ours: &[EspProposal], with_dh: bool) -> Option<(EspProposal, u32)> {
    let [p] = answer else { return None };
    // Groups that key nothing: all of them without a key exchange; with
    // one, a "none" beside our proposal without a group. Beside a group
    // of ours, a "none" too is one transform too many.
    let idle_groups = |e: &EspProposal| match (with_dh, e.dh) {
        (false, _) => p.of_type(tt::DH).count(),
        (true, None) => p.of_type(tt::DH).filter(|t| t.id == dh::NONE).count(),
        (true, Some(_)) => 0,
    };
    let fits = |e: &&EspProposal| {
        esp_matches(p, e, with_dh)
            && counted(p, e.cipher.is_aead()) - idle_groups(e) <= esp_transforms(e, with_dh).len()
    };
    let e = ours.iter().find(fits)?;
    Some((*e, spi_of(p)?))
}

fn transform_name(t: &Transform) -> String {
    let bits = t.key_len.map_or(String::new(), |b| b.to_string());
    match (t.kind, t.id) {
        (tt::ENCR, encr::AES_GCM_16) => format!("aes{bits}gcm16"),
        (tt::ENCR, encr::AES_CBC) => format!("aes{bits}"),
        (tt::ENCR, id) => format!("encr{id}"),
        (tt::PRF, id) => match PrfAlg::from_id(id) {
            Some(PrfAlg::HmacSha256) => "prfsha256".into(),
            Some(PrfAlg::HmacSha384) => "prfsha384".into(),
            None if id == prf::HMAC_SHA2_512 => "prfsha512".into(),
            None => format!("prf{id}"),
        },
        (tt::INTEG, id) => match IntegAlg::from_id(id) {
            Some(IntegAlg::HmacSha256_128) => "sha256".into(),
            None if id == integ::HMAC_SHA2_384_192 => "sha384".into(),
            None if id == integ::HMAC_SHA2_512_256 => "sha512".into(),
            None => format!("integ{id}"),
        },
        (tt::DH, id) => match DhGroup::from_id(id) {
            Some(DhGroup::Modp2048) => "modp2048".into(),
            Some(DhGroup::Ecp256) => "ecp256".into(),
            Some(DhGroup::Ecp384) => "ecp384".into(),
            Some(DhGroup::Curve25519) => "x25519".into(),
            None => format!("dh{id}"),
        },
        (tt::ESN, esn::NO) => "noesn".into(),
        (tt::ESN, esn::YES) => "esn".into(),
        (kind, id) => format!("t{kind}:{id}"),
    }
}

/// An offer in strongSwan's notation, proposals separated by ", ":
/// `aes256gcm16-prfsha256-x25519, aes256-sha256-prfsha256-modp2048`.
pub(crate) fn describe(offered: &[Proposal]) -> String {
    // strongSwan's order, whatever the order on the wire: encryption,
    // integrity, PRF, group, ESN.
    let rank = |kind: u8| match kind {
        tt::ENCR => 0,
        tt::INTEG => 1,
        tt::PRF => 2,
        tt::DH => 3,
        _ => 4,
    };
    let names: Vec<String> = offered
        .iter()
        .map(|p| {
            let mut ts: Vec<_> = p.transforms.iter().collect();
            ts.sort_by_key(|t| rank(t.kind));
            ts.into_iter().map(transform_name).collect::<Vec<_>>().join("-")
        })
        .collect();
    if names.is_empty() {
        return "(nothing)".into();
    }
    // An offer is the sender's to make as long as a datagram allows: the
    // log line is cut, saying how many proposals there were.
    let mut text = names.join(", ");
    if text.len() > MAX_DESCRIBED {
        let mut cut = MAX_DESCRIBED;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(&format!("… ({} proposals in all)", names.len()));
    }
    text
}

/// The longest description of an offer, in bytes before the count.
const MAX_DESCRIBED: usize = 400;

/// Selectors in a log line: `10.1.0.0/16 fd00::/64`.
pub fn describe_ts(list: &[TrafficSelector]) -> String {
    list.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
}

/// Responder narrowing: every overlap of what is offered with what is
/// allowed, in the order offered; empty when there is none. At most
/// [`MAX_SELECTORS`], what a TS payload can carry: two lists of 255 could
/// overlap in 65,025 ways, and keeping the first 255 only narrows further.
pub(crate) fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for o in offered {
        for a in allowed {
            if let Some(ts) = o.intersect(a) {
                if !out.contains(&ts) {
                    out.push(ts);
                    if out.len() == MAX_SELECTORS {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// Initiator check: each returned selector lies within one we offered.
pub(crate) fn within(answer: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    !answer.is_empty() && answer.iter().all(|a| offered.iter().any(|o| o.intersect(a) == Some(*a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child_keys::EspCipher;
    use crate::ids::{dh, encr, integ, prf, protocol};
    use crate::wire::proposal::Transform;

    #[test]
    fn a_nonce_must_be_half_the_prf_key_and_at_least_16_octets() {
        assert_eq!(short_nonce(&[0; 16], PrfAlg::HmacSha256), None);
        assert!(short_nonce(&[0; 23], PrfAlg::HmacSha384).is_some());
        assert_eq!(short_nonce(&[0; 24], PrfAlg::HmacSha384), None);
    }

    // A child SA request whose proposal lists two groups, with a KE in the
    // second: the choice is the proposal of ours in that group, not our
    // first, which would send INVALID_KE_PAYLOAD for no reason.
    #[test]
    fn a_child_proposal_in_the_group_of_the_ke_sent_is_chosen() {
        let gcm = EspCipher::AesGcm16 { key_bits: 256 };
        let ours = [
            EspProposal { cipher: gcm, dh: Some(DhGroup::Ecp256), esn: false },
            EspProposal { cipher: gcm, dh: Some(DhGroup::Curve25519), esn: false },
        ];
        let mut offered = esp_offer(&ours[..1], 0x1234, true).remove(0);
        offered.transforms.push(Transform::new(tt::DH, dh::CURVE25519, None));
        let chosen = |ke| choose_esp(std::slice::from_ref(&offered), &ours, true, ke).map(|(e, spi, _)| (e.dh, spi));
        assert_eq!(chosen(Some(dh::CURVE25519)), Some((Some(DhGroup::Curve25519), 0x1234)));
        assert_eq!(chosen(Some(dh::ECP_256)), Some((Some(DhGroup::Ecp256), 0x1234)));
        assert_eq!(chosen(None), Some((Some(DhGroup::Ecp256), 0x1234)), "our first without a KE");
    }

    /// An IKE proposal of AES-CBC-256, its transforms in the order given.
    fn cbc_proposal(rest: &[(u8, u16)]) -> Proposal {
        let mut transforms = vec![Transform::new(tt::ENCR, encr::AES_CBC, Some(256))];
        transforms.extend(rest.iter().map(|&(kind, id)| Transform::new(kind, id, None)));
        Proposal { num: 1, protocol: protocol::IKE, spi: Vec::new(), transforms }
    }

    // Some peers answer an AEAD proposal with an explicit integrity
    // "none"; the answer is still exactly the suite offered.
    #[test]
    fn an_aead_answer_with_integrity_none_is_accepted() {
        let gcm = IkeSuite {
            encr: crate::crypto::EncrAlg::AesGcm16 { key_bits: 256 },
            prf: PrfAlg::HmacSha256,
            integ: None,
            dh: DhGroup::Curve25519,
        };
        let mut ike = ike_offer(&[gcm], &[]).remove(0);
        assert_eq!(accept_ike(std::slice::from_ref(&ike), &[gcm]), Some(gcm));
        ike.transforms.insert(1, Transform::new(tt::INTEG, integ::NONE, None));
        assert_eq!(accept_ike(std::slice::from_ref(&ike), &[gcm]), Some(gcm));
        ike.transforms.push(Transform::new(tt::DH, dh::MODP_2048, None));
        assert_eq!(accept_ike(&[ike], &[gcm]), None, "a second group is not one suite");
        let aead = EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: None, esn: false };
        let mut esp = esp_offer(&[aead], 0x1234, false).remove(0);
        esp.transforms.insert(1, Transform::new(tt::INTEG, integ::NONE, None));
        assert_eq!(accept_esp(std::slice::from_ref(&esp), &[aead], false), Some((aead, 0x1234)));
        // A group in an answer without a key exchange (IKE_AUTH), or a
        // "none" group in a CREATE_CHILD_SA answer, is not a transform
        // too many; a real group where none was asked for still is.
        let mut echoed = esp.clone();
        echoed.transforms.push(Transform::new(tt::DH, dh::MODP_2048, None));
        assert_eq!(accept_esp(std::slice::from_ref(&echoed), &[aead], false), Some((aead, 0x1234)));
        let mut none = esp_offer(&[aead], 0x1234, true).remove(0);
        none.transforms.push(Transform::new(tt::DH, dh::NONE, None));
        assert_eq!(accept_esp(std::slice::from_ref(&none), &[aead], true), Some((aead, 0x1234)));
        assert_eq!(accept_esp(&[echoed], &[aead], true), None, "a group we did not offer");
        let pfs = EspProposal { dh: Some(DhGroup::Ecp256), ..aead };
        let mut both = esp_offer(&[pfs], 0x1234, true).remove(0);
        assert_eq!(accept_esp(std::slice::from_ref(&both), &[pfs], true), Some((pfs, 0x1234)));
        both.transforms.push(Transform::new(tt::DH, dh::NONE, None));
        assert_eq!(accept_esp(&[both], &[pfs], true), None, "our group and none: two groups, not our proposal");
        // Not beside a real integrity algorithm: that is two of them.
        let cbc = IkeSuite {
            encr: crate::crypto::EncrAlg::AesCbc { key_bits: 256 },
            integ: Some(IntegAlg::HmacSha256_128),
            ..gcm
        };
        let mut two = ike_offer(&[cbc], &[]).remove(0);
        assert_eq!(accept_ike(std::slice::from_ref(&two), &[cbc]), Some(cbc));
        two.transforms.push(Transform::new(tt::INTEG, integ::NONE, None));
        assert_eq!(accept_ike(&[two], &[cbc]), None);
    }

    #[test]
    fn offers_are_named_in_strongswans_order_whatever_the_wire_order() {
        let p = cbc_proposal(&[
            (tt::PRF, prf::HMAC_SHA2_256),
            (tt::INTEG, integ::HMAC_SHA2_256_128),
            (tt::DH, dh::MODP_2048),
        ]);
        assert_eq!(describe(&[p]), "aes256-sha256-prfsha256-modp2048");
        assert_eq!(describe(&[]), "(nothing)");
    }

    #[test]
    fn a_huge_offer_is_described_in_a_bounded_line() {
        let p = cbc_proposal(&[(tt::INTEG, integ::HMAC_SHA2_256_128), (tt::DH, dh::MODP_2048)]);
        let text = describe(&vec![p; 500]);
        assert!(text.len() < MAX_DESCRIBED + 40, "{} bytes", text.len());
        assert!(text.starts_with("aes256-sha256-modp2048, aes256"), "{text}");
        assert!(text.ends_with("… (500 proposals in all)"), "{text}");
    }

    #[test]
    fn narrowing_keeps_at_most_what_a_ts_payload_carries() {
        use std::net::{IpAddr, Ipv4Addr};
        // 255 /24s offered against 255 /16s whose every pair overlaps
        // differently: ports tell the /16s apart.
        let offered: Vec<_> =
            (0..255u8).map(|i| TrafficSelector::subnet(IpAddr::V4(Ipv4Addr::new(10, 1, i, 0)), 24)).collect();
        let allowed: Vec<_> = (0..255u16)
            .map(|i| TrafficSelector {
                start_port: i,
                end_port: i,
                ..TrafficSelector::subnet(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16)
            })
            .collect();
        let out = narrow(&offered, &allowed);
        assert_eq!(out.len(), MAX_SELECTORS);
        assert!(out.iter().all(|ts| ts.start == offered[0].start), "the first offered selector's overlaps come first");
        assert_eq!(narrow(&offered[..2], &allowed[..3]).len(), 6, "under the limit every overlap is kept");
    }
}
