//! A connection's children as one Causeway child SA: their selectors,
//! ESP proposals, lifetime and start action. Causeway negotiates one child
//! SA per peer, so children that differ in any of these are an error that
//! says how to merge them (`one_child_advice`).

use std::net::IpAddr;

use causeway_config::TrafficSelector;

use super::swanctl::Section;
use super::swanctl_connection::Conn;
use super::swanctl_keys::{CHILD_KEYS, CONN_KEYS};
use super::swanctl_values::{self as values, Kind};

/// What a child SA contributes to the peer.
#[derive(Clone, PartialEq, Debug)]
pub(super) struct Child {
    pub(super) local_ts: Vec<TrafficSelector>,
    pub(super) remote_ts: Vec<TrafficSelector>,
    pub(super) esp_proposals: Vec<String>,
    pub(super) lifetime: Option<u32>,
    pub(super) initiate: bool,
}

/// The prefixes routed to the peer: those of its selectors, each once (a
/// selector narrowed to a protocol still routes its whole prefix; the
/// selectors keep the rest out).
pub(super) fn routed(remote_ts: &[TrafficSelector]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for net in remote_ts.iter().map(|ts| ts.net.to_string()) {
        if !out.contains(&net) {
            out.push(net);
        }
    }
    out
}

/// The child SA's rekey time: `rekey_time`, else strongSwan's from
/// `life_time` (`values::rekey_from_life`); as that rule changed in 5.9.9,
/// the operator is told when the older one gives another time. Problems
/// are told against the setting it came from, at its own line.
fn child_lifetime(c: &mut Conn, ch: &Section) -> Option<u64> {
    let s = ch.get("rekey_time").or_else(|| ch.get("life_time"))?;
    let path = format!("children.{}.{}", ch.name, s.key);
    c.from("child_lifetime", &path, &s.at);
    let v = c.read(ch, &s.key, &path, values::seconds)?;
    let from_life = s.key == "life_time";
    let rekey = if from_life { values::rekey_from_life(v) } else { v };
    let (least, most) = causeway_config::CHILD_LIFETIME_SECONDS;
    if rekey == 0 {
        let why = if v == 0 { "0".to_string() } else { format!("{v} s / 1.1 gives a rekey time of 0, which") };
        let why = format!("{why} turns rekeying off; Causeway always rekeys child SAs (its default is 3600 s)");
        c.fail(&s.at, &path, why);
    } else if from_life && !(u64::from(least)..=u64::from(most)).contains(&rekey) {
        // Told here in the setting's own terms: the converted file's check
        // would name only the derived value.
        let why = format!(
            "{v} s gives a rekey time of {rekey} s (life_time / 1.1, as strongSwan derives it), outside the \
             {least} to {most} s Causeway takes as child_lifetime; set rekey_time"
        );
        c.fail(&s.at, &path, why);
        return None;
    } else if from_life {
        c.notes.extend(values::life_time_note(&path, v, rekey));
    }
    Some(rekey)
}

fn child(c: &mut Conn, ch: &Section, own: (Option<IpAddr>, Option<IpAddr>)) -> Child {
    let p = |key: &str| format!("children.{}.{key}", ch.name);
    let ts = |c: &mut Conn, key: &'static str, own: Option<IpAddr>| -> Vec<TrafficSelector> {
        let (text, at) = ch.get(key).map_or(("dynamic", ch.at.as_str()), |s| (s.value.as_str(), s.at.as_str()));
        c.from(key, &p(key), at);
        let mut out = Vec::new();
        for item in values::list(text) {
            match values::selector(item, own) {
                Ok(ts) => out.push(ts),
                Err(e) => c.fail(at, &p(key), e),
            }
        }
        out
    };
    let local_ts = ts(c, "local_ts", own.0);
    let remote_ts = ts(c, "remote_ts", own.1);
    // Causeway routes remote_ts into the tunnel (allowed_ips): the peer's
    // own address there would take IKE and ESP to the peer in with it.
    if let Some(peer) = own.1 {
        let (given, at) =
            ch.get("remote_ts").map_or((None, ch.at.as_str()), |s| (Some(s.value.as_str()), s.at.as_str()));
        for ts in remote_ts.iter().filter(|ts| ts.net.contains(&peer) && ts.net.prefix_len() > 0) {
            if ts.net.prefix_len() < ts.net.max_prefix_len() {
                c.notes.push(format!(
                    "{}: {} holds the peer's address {peer}: routed into the tunnel, IKE and ESP to the peer \
                     would go there too, unless a more specific route (the WAN's own subnet) takes them",
                    p("remote_ts"),
                    ts.net
                ));
                continue;
            }
            let why = match given {
                None => " (strongSwan's default, dynamic)",
                Some(v) if v.contains("dynamic") => " (dynamic)",
                Some(_) => "",
            };
            c.fail(
                at,
                &p("remote_ts"),
                format!(
                    "{}{why} is the peer's own address, which a route-based gateway would route into the tunnel \
                     together with IKE and ESP to it; set remote_ts to the networks behind the peer",
                    ts.net
                ),
            );
        }
    }
    let esp_proposals = c
        .read(ch, "esp_proposals", &p("esp_proposals"), |v| values::proposals(v, Kind::Esp))
        .flatten()
        .unwrap_or_default();
    if let Some(s) = ch.get("esp_proposals") {
        c.from("esp_proposals", &p("esp_proposals"), &s.at);
    }
    let lifetime = child_lifetime(c, ch);
    if ch.get("rekey_time").is_some() && ch.get("life_time").is_some() {
        c.skipped.push(p("life_time"));
    }
    let initiate = match ch.get("start_action") {
        None => false,
        Some(s) => {
            let mut start = false;
            for word in s.value.split('|').map(str::trim) {
                match word {
                    "start" | "restart" => start = true,
                    "trap" | "route" | "none" | "clear" => {}
                    other => {
                        c.fail(&s.at, &p("start_action"), format!("expected none, trap or start, got \"{other}\""))
                    }
                }
            }
            c.from("initiate", &p("start_action"), &s.at);
            start
        }
    };
    if let Some(m) = ch.get("mode").filter(|m| m.value.trim() != "tunnel") {
        c.fail(&m.at, &p("mode"), format!("{}: Causeway runs tunnel mode only", m.value.trim()));
    }
    if let Some(a) = ch.get("ah_proposals") {
        c.fail(&a.at, &p("ah_proposals"), "AH is not supported; Causeway runs ESP");
    }
    if let Some(i) = ch.get("ipcomp").filter(|i| values::boolean(&i.value).unwrap_or(true)) {
        c.fail(&i.at, &p("ipcomp"), "IP compression is not supported");
    }
    c.check_keys(ch, &format!("children.{}.", ch.name), CHILD_KEYS, Some((CONN_KEYS, "the connection")));
    for sub in &ch.sections {
        c.unknown_section(sub, &format!("children.{}.", ch.name), &[]);
    }
    Child { local_ts, remote_ts, esp_proposals, lifetime: lifetime.map(|v| v as u32), initiate }
}

/// The children of a connection, which must all describe one child SA.
pub(super) fn children(c: &mut Conn, conn: &Section, own: (Option<IpAddr>, Option<IpAddr>)) -> Option<Child> {
    let Some(list) = conn.section("children").filter(|l| !l.sections.is_empty()) else {
        c.fail(&conn.at, "children", "no children { } section: Causeway needs the child SA's traffic selectors");
        return None;
    };
    for x in &list.settings {
        let path = format!("children.{}", x.key);
        c.fail(
            &x.at,
            &path,
            "not a swanctl setting: children { } holds one section per child, settings go inside them",
        );
    }
    let mapped: Vec<(&Section, Child)> = list.sections.iter().map(|ch| (ch, child(c, ch, own))).collect();
    let (first_sec, first) = &mapped[0];
    for (sec, other) in &mapped[1..] {
        let what = if (&other.local_ts, &other.remote_ts) != (&first.local_ts, &first.remote_ts) {
            "traffic selectors (local_ts, remote_ts)"
        } else if other.esp_proposals != first.esp_proposals {
            "esp_proposals"
        } else if other.lifetime != first.lifetime {
            "rekey times (rekey_time, life_time)"
        } else if other.initiate != first.initiate {
            "start_action"
        } else {
            c.notes.push(format!("children {} and {} are alike: imported once", first_sec.name, sec.name));
            continue;
        };
        let why = format!("its {what} differ from those of children.{}", first_sec.name);
        c.fail(&sec.at, &format!("children.{}", sec.name), format!("{why}; {}", one_child_advice(what)));
    }
    Some(first.clone())
}

/// What to do with children that differ. Splitting them into connections
/// to the same peer would not do: Causeway picks an answering peer by
/// its remote identity, so two with the same one cannot be told apart.
fn one_child_advice(what: &str) -> String {
    let merge = if what.starts_with("traffic selectors") {
        "merge the children into one child whose local_ts and remote_ts list all the selectors \
         (route-based, as Causeway's peers are)"
            .to_string()
    } else {
        format!("give the children the same {what}")
    };
    format!(
        "Causeway negotiates one child SA per peer and tells IPsec peers apart by remote identity: {merge}, \
         or split them into connections that each have a remote identity of their own"
    )
}
