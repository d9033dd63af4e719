//! From the file as written (`schema`) to the typed `Config`, collecting
//! every problem with its line and field.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use causeway_wireguard::{PresharedKey, PublicKey, StaticSecret};
use ipnet::IpNet;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::checker::Checker;
use crate::key::{parse_key, read_key_file};
use crate::locate::{join, key_at, table_at};
use crate::prefix::{parse_address, parse_allowed_ip};
use crate::rules;
use crate::schema::{RawConfig, RawInterface, RawPeer};
use crate::sites::Member;
use crate::types::{
    Config, Endpoint, Interface, Peer, RouteTable, Site, DEFAULT_DNS_REFRESH, DEFAULT_FAILOVER_AFTER,
    DEFAULT_LISTEN_PORT, DEFAULT_MTU, DEFAULT_MTU_IPSEC, MAX_MTU, MIN_MTU, MIN_MTU_IPV6,
};
use crate::ConfigError;

impl Checker<'_> {
    /// A key given inline or in a file (exactly one of the two when required).
    fn key(
        &mut self,
        table: &str,
        inline: &Option<Spanned<Zeroizing<String>>>,
        file: &Option<Spanned<String>>,
        names: (&str, &str),
        table_span: Range<usize>,
        required: bool,
    ) -> Option<Zeroizing<[u8; 32]>> {
        match (inline, file) {
            (Some(k), Some(_)) => {
                self.report(
                    k.span(),
                    join(table, names.0),
                    format!("give either {} or {}, not both", names.0, names.1),
                );
                None
            }
            (Some(k), None) => match (parse_key(k.get_ref()), self.exposed) {
                (Ok(_), Some(mode)) => {
                    let message = format!(
                        "a key written in a file {} (mode {mode:03o}) is not private: \
                         run `chmod 600 {}`, or give {} instead",
                        crate::key::exposure(mode),
                        self.file.display(),
                        names.1
                    );
                    self.report(k.span(), join(table, names.0), message);
                    None
                }
                (Ok(v), None) => Some(v),
                (Err(e), _) => {
                    self.report(k.span(), join(table, names.0), e.to_string());
                    None
                }
            },
            (None, Some(f)) => match read_key_file(&self.resolve_path(f.get_ref()), Some(&self.owners)) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.report(f.span(), join(table, names.1), e.to_string());
                    None
                }
            },
            (None, None) => {
                if required {
                    self.report(
                        table_span,
                        table,
                        format!("missing {}: set {} = \"<base64>\" or {} = \"/path/to/key\" (make one with `tunctl genkey`)", names.0, names.0, names.1),
                    );
                }
                None
            }
        }
    }

    fn interface(&mut self, raw: &Spanned<RawInterface>) -> Option<Interface> {
        let t = "interface";
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.problems.len();
        let name = raw.name.as_ref().and_then(|n| match rules::interface_name(n.get_ref()) {
            Ok(()) => Some(n.get_ref().clone()),
            Err(e) => {
                self.report(n.span(), join(t, "name"), e);
                None
            }
        });
        let key = self.key(
            t,
            &raw.private_key,
            &raw.private_key_file,
            ("private_key", "private_key_file"),
            span.clone(),
            true,
        );
        let addresses: Vec<IpNet> = self.prefixes(&join(t, "addresses"), &raw.addresses, parse_address);
        let mtu = raw.mtu.as_ref().map_or(DEFAULT_MTU, |m| *m.get_ref());
        let min = if addresses.iter().any(|a| a.addr().is_ipv6()) { MIN_MTU_IPV6 } else { MIN_MTU };
        if !(min..=MAX_MTU).contains(&mtu) {
            let why = if min == MIN_MTU_IPV6 { " (IPv6 addresses need at least 1280)" } else { "" };
            self.report(
                raw.mtu.as_ref().map_or(span.clone(), |m| m.span()),
                join(t, "mtu"),
                format!("expected an MTU from {min} to {MAX_MTU}{why}, got {mtu}"),
            );
        }
        let workers = raw.workers.as_ref().and_then(|w| match rules::workers(u64::from(*w.get_ref())) {
            Ok(n) => n,
            Err(e) => {
                self.report(w.span(), join(t, "workers"), e);
                None
            }
        });
        let metrics_listen = raw.metrics_listen.as_ref().and_then(|m| {
            let parsed = m.get_ref().parse::<SocketAddr>();
            if parsed.is_err() {
                self.report(m.span(), join(t, "metrics_listen"), "expected ip:port, such as 127.0.0.1:9586");
            }
            parsed.ok()
        });
        let install = raw.install_routes.as_ref().is_some_and(|r| *r.get_ref());
        let routes = match &raw.route_table {
            Some(table) if !install => {
                self.report(table.span(), join(t, "route_table"), "route_table needs install_routes = true");
                None
            }
            // 0 is "unspecified" to the kernel, 253 and 255 are the default
            // and local tables: no home for peer routes.
            Some(table) if [0, 253, 255].contains(table.get_ref()) => {
                self.report(
                    table.span(),
                    join(t, "route_table"),
                    format!("expected 254 (main) or another table from 1 to 252 or above 255, got {}", table.get_ref()),
                );
                None
            }
            Some(table) => Some(RouteTable(*table.get_ref())),
            None => install.then_some(RouteTable::MAIN),
        };
        let user = raw.user.as_ref().and_then(|u| {
            let ok = !u.get_ref().is_empty()
                && u.get_ref().len() <= 32
                && u.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                self.report(u.span(), join(t, "user"), "expected a user name, such as \"causeway\"");
                return None;
            }
            // Looked up only for a file about to be started (`up`, `check`):
            // a name missing here would stop `up` after every other check
            // had passed, and is then told where it stands.
            let name = u.get_ref();
            if self.lookup_user && matches!(nix::unistd::User::from_name(name), Ok(None)) {
                self.report(
                    u.span(),
                    join(t, "user"),
                    format!(
                        "no user \"{name}\" on this host: create it (useradd --system --no-create-home {name}) or \
                         leave user out to run as root"
                    ),
                );
                return None;
            }
            Some(name.clone())
        });
        let dns_refresh = match &raw.dns_refresh {
            None => Some(DEFAULT_DNS_REFRESH),
            Some(d) if *d.get_ref() == 0 => None,
            Some(d) if *d.get_ref() <= 86_400 => Some(std::time::Duration::from_secs(*d.get_ref() as u64)),
            Some(d) => {
                self.report(
                    d.span(),
                    join(t, "dns_refresh"),
                    format!("expected 1 to 86400 seconds (or 0 for never), got {}", d.get_ref()),
                );
                None
            }
        };
        let private_key = key.map(|k| StaticSecret::from_bytes(*k))?;
        (self.problems.len() == before).then(|| Interface {
            name,
            private_key,
            listen_port: raw.listen_port.as_ref().map_or(DEFAULT_LISTEN_PORT, |p| *p.get_ref()),
            addresses,
            mtu,
            workers,
            mss_clamp: raw.mss_clamp.as_ref().is_none_or(|m| *m.get_ref()),
            metrics_listen,
            routes,
            user,
            dns_refresh,
        })
    }

    fn endpoint(&mut self, field: &str, s: &Spanned<String>) -> Option<Endpoint> {
        s.get_ref().parse::<Endpoint>().map_err(|e| self.report(s.span(), field, e)).ok()
    }

    fn peer(&mut self, index: usize, raw: &Spanned<RawPeer>) -> Option<Peer> {
        let t = format!("peer[{index}]");
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.problems.len();
        let name = match &raw.name {
            Some(n) => match rules::peer_name(n.get_ref()) {
                Ok(()) => Some(n.get_ref().clone()),
                Err(e) => {
                    self.report(n.span(), join(&t, "name"), e);
                    None
                }
            },
            None => {
                self.report(span.clone(), &t, "missing name: every peer needs one, such as name = \"dc-east\"");
                None
            }
        };
        let public_key = match &raw.public_key {
            Some(k) => match parse_key(k.get_ref()) {
                Ok(v) => Some(PublicKey::from_bytes(*v)),
                Err(e) => {
                    self.report(k.span(), join(&t, "public_key"), e.to_string());
                    None
                }
            },
            None => {
                self.report(span.clone(), &t, "missing public_key (the peer's `wg pubkey` output)");
                None
            }
        };
        let psk = self
            .key(
                &t,
                &raw.preshared_key,
                &raw.preshared_key_file,
                ("preshared_key", "preshared_key_file"),
                span.clone(),
                false,
            )
            .map(|k| PresharedKey::from_bytes(*k));
        let endpoints = raw.endpoints.iter().filter_map(|e| self.endpoint(&join(&t, "endpoints"), e)).collect();
        let allowed_ips = self.prefixes(&join(&t, "allowed_ips"), &raw.allowed_ips, parse_allowed_ip);
        let failover_after = match &raw.failover_after {
            None => Some(DEFAULT_FAILOVER_AFTER),
            Some(f) => rules::failover_after(u64::from(*f.get_ref()))
                .map_err(|e| self.report(f.span(), join(&t, "failover_after"), e))
                .ok(),
        };
        if self.problems.len() != before {
            return None;
        }
        Some(Peer {
            name: name?,
            public_key: public_key?,
            preshared_key: psk,
            endpoints,
            allowed_ips,
            persistent_keepalive: raw.persistent_keepalive.as_ref().map_or(0, |k| *k.get_ref()),
            failover_after: failover_after?,
            site: None,
        })
    }

    /// Across peers: unique names and keys, no peer with our own key (nor
    /// with our private key pasted as its public key, which would then be
    /// shown wherever peers' keys are), and no prefix routed to two peers
    /// (one containing the other counts, since the more specific one would
    /// silently take the traffic).
    pub(crate) fn cross_checks(
        &mut self,
        raw: &[Spanned<RawPeer>],
        peers: &[(usize, Peer)],
        ipsec: &[(usize, crate::types::IpsecPeer)],
        own_key: Option<&StaticSecret>,
    ) {
        let own = own_key.map(StaticSecret::public_key);
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut keys: HashMap<PublicKey, usize> = HashMap::new();
        let all_names =
            peers.iter().map(|(i, p)| (*i, p.name.as_str())).chain(ipsec.iter().map(|(i, p)| (*i, p.name.as_str())));
        let mut all_names: Vec<_> = all_names.collect();
        all_names.sort();
        for (i, name) in all_names {
            let r = raw[i - 1].get_ref();
            if let Some(first) = names.insert(name, i) {
                self.report(
                    r.name.as_ref().map_or(0..0, |n| n.span()),
                    join(&format!("peer[{i}]"), "name"),
                    format!("name \"{name}\" is already used by peer[{first}]"),
                );
            }
        }
        for (i, p) in peers {
            let r = raw[*i - 1].get_ref();
            let key_span = r.public_key.as_ref().map_or(0..0, |k| k.span());
            if let Some(first) = keys.insert(p.public_key, *i) {
                self.report(
                    key_span.clone(),
                    join(&format!("peer[{i}]"), "public_key"),
                    format!("public key is already used by peer[{first}]"),
                );
            }
            if Some(p.public_key) == own {
                self.report(
                    key_span,
                    join(&format!("peer[{i}]"), "public_key"),
                    "this is the interface's own public key",
                );
            } else if own_key.is_some_and(|k| *k == StaticSecret::from_bytes(*p.public_key.as_bytes())) {
                // Compared in constant time (`StaticSecret`'s equality).
                self.report(
                    key_span,
                    join(&format!("peer[{i}]"), "public_key"),
                    "this is the interface's private key, not a peer's public key: give the peer's public key here",
                );
            }
        }
        // An IPsec peer without endpoints answers IKE from any address
        // (from one another peer lists only where that peer refuses the
        // offer or the identity is its own), and IKE_SA_INIT names no
        // identity to choose between two such peers by: only one may be.
        let mut open_ended = ipsec.iter().filter(|(_, p)| p.endpoints.is_empty());
        if let Some((first, _)) = open_ended.next() {
            for (i, p) in open_ended {
                let r = raw[*i - 1].get_ref();
                self.report(
                    r.name.as_ref().map_or(0..0, |n| n.span()),
                    join(&format!("peer[{i}]"), "endpoints"),
                    format!(
                        "IPsec peer \"{}\" has no endpoints, and neither has peer[{first}]: only one IPsec peer may \
                         answer IKE from any address; give this one its endpoints",
                        p.name
                    ),
                );
            }
        }
        // Peers behind one address must be told apart by the responder
        // (`crate::ipsec::shared_address_clash`).
        for (n, (i, p)) in ipsec.iter().enumerate() {
            let clash = ipsec[..n].iter().find_map(|(j, q)| crate::ipsec::shared_address_clash(p, q).map(|m| (*j, m)));
            if let Some((first, why)) = clash {
                let r = raw[*i - 1].get_ref();
                self.report(
                    r.name.as_ref().map_or(0..0, |n| n.span()),
                    join(&format!("peer[{i}]"), "endpoints"),
                    format!("{why} (peer[{first}])"),
                );
            }
        }
        // Sort so that every prefix comes after the prefixes containing it;
        // CIDR blocks are nested or disjoint, so a stack finds containment.
        let mut all: Vec<(IpNet, usize, usize)> = Vec::new();
        let routed =
            peers.iter().map(|(i, p)| (*i, &p.allowed_ips)).chain(ipsec.iter().map(|(i, p)| (*i, &p.allowed_ips)));
        for (i, nets) in routed {
            for (j, net) in nets.iter().enumerate() {
                all.push((*net, i, j));
            }
        }
        all.sort_by_key(|(net, _, _)| (net.addr().is_ipv6(), net.network(), net.prefix_len()));
        let mut stack: Vec<(IpNet, usize)> = Vec::new();
        let mut clashes = Vec::new();
        for (net, peer, j) in all {
            while stack.last().is_some_and(|(outer, _)| !outer.contains(&net)) {
                stack.pop();
            }
            if let Some((outer, other)) = stack.iter().rev().find(|(_, p)| *p != peer) {
                clashes.push((peer, j, net, *outer, *other));
            }
            stack.push((net, peer));
        }
        clashes.sort();
        for (peer, j, net, outer, other) in clashes {
            let span = raw[peer - 1].get_ref().allowed_ips[j].span();
            let how = if outer == net { "is also routed to".to_string() } else { format!("lies inside {outer} of") };
            self.report(
                span,
                join(&format!("peer[{peer}]"), "allowed_ips"),
                format!(
                    "{net} {how} peer[{other}] ({}); each address may belong to one peer only",
                    peers
                        .iter()
                        .find(|(i, _)| *i == other)
                        .map(|(_, p)| p.name.as_str())
                        .or_else(|| ipsec.iter().find(|(i, _)| *i == other).map(|(_, p)| p.name.as_str()))
                        .unwrap_or("")
                ),
            );
        }
    }
}

/// The file as written, or its syntax error located.
pub(crate) fn read_raw(c: &mut Checker<'_>) -> Option<RawConfig> {
    match toml::from_str(c.source) {
        Ok(r) => Some(r),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let field = join(&table_at(c.source, span.start), &key_at(c.source, span.start).unwrap_or_default());
            c.report(span, field, plain_words(e.message().trim()));
            None
        }
    }
}

/// The TOML reader's message with Rust's type names put in an operator's
/// words ("expected u16" says nothing to someone writing a port).
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 9] = [
        ("expected u8", "expected a whole number from 0 to 255, without quotes"),
        ("expected u16", "expected a whole number from 0 to 65535, without quotes"),
        ("expected u32", "expected a whole number from 0 to 4294967295, without quotes"),
        ("expected u64", "expected a whole number from 0 up, without quotes"),
        ("expected usize", "expected a whole number from 0 up, without quotes"),
        ("expected i64", "expected a whole number, without quotes"),
        ("expected a sequence", "expected a list in brackets, such as [\"10.1.0.0/16\"]"),
        ("expected a map", "expected a table"),
        (
            "number too large to fit in target type",
            "a number too large for any setting; text, such as a key, goes in quotes",
        ),
    ];
    let mut m = message.to_string();
    for (rust, plain) in WORDS {
        // Only whole words: "expected u16" must not match inside "expected u160".
        if let Some(at) = m.find(rust) {
            let end = at + rust.len();
            if !m[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                m.replace_range(at..end, plain);
            }
        }
    }
    m
}

/// Every `[[peer]]` table checked on its own, by its protocol, with its
/// index (from 1) for the checks across peers.
pub(crate) type CheckedPeers = (Vec<(usize, Peer)>, Vec<(usize, crate::types::IpsecPeer)>);

pub(crate) fn check_peers(c: &mut Checker<'_>, raw: &[Spanned<RawPeer>]) -> CheckedPeers {
    let mut peers: Vec<(usize, Peer)> = Vec::new();
    let mut ipsec_peers = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let t = format!("peer[{}]", i + 1);
        let site = c.peer_site(&t, p.get_ref());
        match p.get_ref().protocol.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("wireguard", _)) => {
                for (field, span) in crate::ipsec::ipsec_only(p.get_ref()) {
                    c.report(span, join(&t, field), format!("{field} is for IPsec peers: add protocol = \"ipsec\""));
                }
                if let Some(peer) = c.peer(i + 1, p) {
                    peers.push((i + 1, Peer { site, ..peer }));
                }
            }
            Some(("ipsec", _)) => {
                if let Some(peer) = c.ipsec_peer(&t, p.span(), p.get_ref()) {
                    ipsec_peers.push((i + 1, crate::types::IpsecPeer { site, ..peer }));
                }
            }
            Some((other, span)) => {
                c.report(span, join(&t, "protocol"), format!("expected \"wireguard\" or \"ipsec\", got \"{other}\""))
            }
        }
    }
    (peers, ipsec_peers)
}

/// `exposed`: the permission bits of the file `source` came from when its
/// group or others may read it (`key::read_config_file`); `owner`: that
/// file's owner, None for text from no file.
pub(crate) fn validate(
    source: &str,
    file: &Path,
    exposed: Option<u32>,
    owner: Option<u32>,
    lookup_user: bool,
) -> Result<Config, ConfigError> {
    let owners = crate::key::Owners { uids: owner.into_iter().collect(), user: None };
    let mut c = Checker { source, file, exposed, owners, lookup_user, problems: Vec::new() };
    let Some(raw) = read_raw(&mut c) else {
        return Err(ConfigError::Invalid(c.problems));
    };
    // The user a daemon that drops root reads its key files as on reloads.
    let user = raw.interface.as_ref().and_then(|i| i.get_ref().user.as_ref());
    c.owners.user = user.map(|u| u.get_ref().clone());
    let mut interface = match &raw.interface {
        Some(i) => c.interface(i),
        None => {
            c.report(0..0, "interface", "missing [interface] table: a gateway needs at least private_key");
            None
        }
    };
    let has_ipsec = raw.peer.iter().any(|p| p.get_ref().protocol.as_ref().is_some_and(|s| s.get_ref() == "ipsec"));
    let mtu_unset = raw.interface.as_ref().is_some_and(|i| i.get_ref().mtu.is_none());
    if let Some(i) = interface.as_mut().filter(|_| has_ipsec && mtu_unset) {
        i.mtu = DEFAULT_MTU_IPSEC;
    }
    // IKE and ESP in UDP bind 500 and 4500 beside WireGuard's sockets.
    let port = raw.interface.as_ref().and_then(|i| i.get_ref().listen_port.as_ref());
    if let Some(p) = port.filter(|p| has_ipsec && matches!(*p.get_ref(), 500 | 4500)) {
        c.report(
            p.span(),
            "interface.listen_port",
            format!(
                "{} is a port of IPsec (IKE on 500, ESP in UDP on 4500), which the IPsec peers here need; \
                 give WireGuard another, such as 51820",
                p.get_ref()
            ),
        );
    }
    let sites: Vec<(usize, Site)> =
        raw.site.iter().enumerate().filter_map(|(i, s)| c.site(i + 1, s).map(|s| (i + 1, s))).collect();
    let (peers, ipsec_peers) = check_peers(&mut c, &raw.peer);
    c.cross_checks(&raw.peer, &peers, &ipsec_peers, interface.as_ref().map(|i| &i.private_key));
    let registry = raw.registry.as_ref().and_then(|r| c.registry(r));
    let members: Vec<Member<'_>> = peers
        .iter()
        .map(|(i, p)| Member { index: *i, name: &p.name, site: p.site.as_deref(), allowed_ips: &p.allowed_ips })
        .chain(ipsec_peers.iter().map(|(i, p)| Member {
            index: *i,
            name: &p.name,
            site: p.site.as_deref(),
            allowed_ips: &p.allowed_ips,
        }))
        .collect();
    c.site_checks(
        &raw.site,
        &sites,
        &raw.peer,
        &members,
        raw.registry.is_some(),
        registry.as_ref().map(|r| r.site.as_str()),
    );
    // An IPsec site gateway carries its site's prefixes too: each must be
    // within reach of its selectors, as its own allowed_ips must. (A
    // site the registry defines is checked when it arrives.)
    for (i, p) in &ipsec_peers {
        let Some((_, site)) = p.site.as_deref().and_then(|s| sites.iter().find(|(_, x)| x.name == s)) else {
            continue;
        };
        for net in &site.prefixes {
            if let Some(listed) = crate::ipsec::unreached(net, &p.remote_ts) {
                let span = raw.peer[*i - 1].get_ref().site.as_ref().map_or(0..0, |s| s.span());
                c.report(
                    span,
                    join(&format!("peer[{i}]"), "site"),
                    format!(
                        "site \"{}\"'s prefix {net} lies outside every remote_ts selector of IPsec peer \"{}\" \
                         ({listed}): its packets would be routed to the peer and dropped; widen remote_ts",
                        site.name, p.name
                    ),
                );
            }
        }
    }
    match interface {
        Some(interface) if c.problems.is_empty() => Ok(Config {
            interface,
            peers: peers.into_iter().map(|(_, p)| p).collect(),
            ipsec_peers: ipsec_peers.into_iter().map(|(_, p)| p).collect(),
            sites: sites.into_iter().map(|(_, s)| s).collect(),
            registry,
        }),
        _ => {
            c.problems.sort_by_key(|p| p.line);
            Err(ConfigError::Invalid(c.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const PUB_A: &str = "Cc8LbKRR2r5vwJTigLNRnTrhc7L4uJLTd9RXJdLA2EA=";
    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";
    const PUB_C: &str = "lUClSgFDcN7sDt4Foo3D12hlo6Zmrh3rFXYS9g8nj1s=";

    fn parse(src: &str) -> Result<Config, ConfigError> {
        validate(src, Path::new("/etc/causeway/gw.toml"), None, None, false)
    }

    fn problems(src: &str) -> Vec<String> {
        parse(src).unwrap_err().problems().iter().map(|p| p.to_string()).collect()
    }

    fn one_problem(src: &str) -> String {
        let p = problems(src);
        assert_eq!(p.len(), 1, "{p:#?}");
        p[0].clone()
    }

    #[test]
    fn a_user_missing_on_this_host_is_named_where_it_stands() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, format!("[interface]\nprivate_key = \"{KEY_A}\"\nuser = \"causeway-no-such-user\"\n"))
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = crate::load_to_start(&path).unwrap_err().to_string();
        assert!(e.contains("gw.toml:3: interface.user: no user \"causeway-no-such-user\" on this host"), "{e}");
        assert!(crate::load(&path).is_ok(), "a reload takes no new user: not looked up");
        let root = "[interface]\nprivate_key = \"{KEY_A}\"\nuser = \"root\"\n".replace("{KEY_A}", KEY_A);
        std::fs::write(&path, root).unwrap();
        assert!(crate::load_to_start(&path).is_ok(), "a user that exists");
        assert!(parse("[interface]\nprivate_key = \"K\"\n".replace('K', KEY_A).as_str()).is_ok());
        let text = format!("[interface]\nprivate_key = \"{KEY_A}\"\nuser = \"causeway-no-such-user\"\n");
        assert!(parse(&text).is_ok(), "text from no file is not looked up");
    }

    #[test]
    fn type_mistakes_are_told_in_an_operators_words() {
        let port = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nlisten_port = \"51820\"\n"));
        assert!(port.contains("gw.toml:3:") && port.contains("from 0 to 65535, without quotes"), "{port}");
        assert!(!port.contains("u16"), "{port}");
        let big = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nlisten_port = 70000\n"));
        assert!(big.contains("from 0 to 65535") && !big.contains("u16"), "{big}");
        let key = one_problem("[interface]\nprivate_key = 12345678901234567890\n");
        assert!(key.contains("goes in quotes"), "{key}");
        assert_eq!(plain_words("expected u160"), "expected u160", "whole words only");
    }

    #[cfg(unix)]
    #[test]
    fn an_inline_key_in_a_file_others_may_read_is_refused_where_it_stands() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let chmod = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        let path = dir.path().join("gw.toml");
        let peer = format!("[[peer]]\nname = \"b\"\npublic_key = \"{PUB_B}\"\npreshared_key = \"{KEY_A}\"\n");
        std::fs::write(&path, format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{peer}")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o440] {
            chmod(&path, mode);
            let e = crate::load(&path).unwrap_err();
            let found: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
            assert_eq!(found.len(), 2, "{found:#?}");
            assert!(found[0].contains("gw.toml:2: interface.private_key:"), "{found:#?}");
            assert!(found[0].contains(&format!("mode {mode:03o}")), "{found:#?}");
            assert!(found[0].contains("chmod 600") && found[0].contains("private_key_file"), "{found:#?}");
            assert!(found[1].contains("gw.toml:7: peer[1].preshared_key:"), "{found:#?}");
            assert!(!found.iter().any(|f| f.contains(KEY_A)), "the key is never echoed");
        }
        for mode in [0o600, 0o400] {
            chmod(&path, mode);
            assert!(crate::load(&path).is_ok(), "{mode:o}");
        }
        // Keys in files of their own: the configuration may be readable.
        let key = dir.path().join("gw.key");
        std::fs::write(&key, format!("{KEY_A}\n")).unwrap();
        chmod(&key, 0o600);
        std::fs::write(&path, "[interface]\nprivate_key_file = \"gw.key\"\n").unwrap();
        chmod(&path, 0o644);
        assert!(crate::load(&path).is_ok());
        // Text that came from no file is not judged by one.
        assert!(parse(&format!("[interface]\nprivate_key = \"{KEY_A}\"\n")).is_ok());
    }

    fn with_peers(peers: &str) -> String {
        format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{peers}")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&with_peers("")).unwrap();
        assert_eq!(c.interface.listen_port, DEFAULT_LISTEN_PORT);
        assert_eq!(c.interface.mtu, DEFAULT_MTU);
        assert_eq!(c.interface.workers, None);
        assert_eq!(c.interface.private_key.public_key().to_base64(), PUB_A);
        assert!(c.peers.is_empty());
    }

    #[test]
    fn full_peer() {
        let c = parse(&with_peers(&format!(
            "[[peer]]\nname = \"dc-east\"\npublic_key = \"{PUB_B}\"\npreshared_key = \"{KEY_A}\"\nendpoints = [\"198.18.0.2:51820\", \"[fd00::2]:51820\", \"gw.example.net:4500\"]\nallowed_ips = [\"10.1.0.0/16\", \"fd00:1::/64\", \"10.9.9.9\"]\npersistent_keepalive = 25\n"
        )))
        .unwrap();
        let p = &c.peers[0];
        assert_eq!(p.name, "dc-east");
        assert_eq!(p.public_key.to_base64(), PUB_B);
        assert!(p.preshared_key.is_some());
        assert_eq!(p.endpoints[0], Endpoint::Addr("198.18.0.2:51820".parse().unwrap()));
        assert_eq!(p.endpoints[1], Endpoint::Addr("[fd00::2]:51820".parse().unwrap()));
        assert_eq!(p.endpoints[2], Endpoint::Host { host: "gw.example.net".into(), port: 4500 });
        assert_eq!(p.allowed_ips[2], "10.9.9.9/32".parse::<IpNet>().unwrap());
        assert_eq!(p.persistent_keepalive, 25);
    }

    #[test]
    fn bad_key_names_file_line_and_field() {
        let src = with_peers("[[peer]]\nname = \"x\"\npublic_key = \"not-a-key\"\n");
        assert_eq!(
            one_problem(&src),
            "/etc/causeway/gw.toml:6: peer[1].public_key: expected a key of 32 bytes in base64 (44 characters ending in '=', as `wg genkey` prints), got 9 characters"
        );
    }

    #[test]
    fn bad_private_key_is_not_echoed() {
        let bad = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lk!=";
        let p = one_problem(&format!("[interface]\nprivate_key = \"{bad}\"\n"));
        assert!(p.starts_with("/etc/causeway/gw.toml:2: interface.private_key: expected a key in base64"), "{p}");
        assert!(!p.contains("CE5vbW"));
    }

    #[test]
    fn bad_cidr() {
        let src = with_peers(&format!(
            "[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.1.0.0/16\",\n  \"10.300.0.0/16\"]\n"
        ));
        assert_eq!(
            one_problem(&src),
            "/etc/causeway/gw.toml:8: peer[1].allowed_ips: \"10.300.0.0/16\" is not an IP prefix: expected address/length, such as 10.1.0.0/16 or fd00:1::/64"
        );
    }

    #[test]
    fn host_bits_in_allowed_ips() {
        let src =
            with_peers(&format!("[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.1.2.3/16\"]\n"));
        assert!(
            one_problem(&src).contains("peer[1].allowed_ips: 10.1.2.3/16 has host bits set; the prefix is 10.1.0.0/16")
        );
    }

    #[test]
    fn duplicate_public_key_and_name() {
        let src = with_peers(&format!(
            "[[peer]]\nname = \"a\"\npublic_key = \"{PUB_B}\"\n\n[[peer]]\nname = \"a\"\npublic_key = \"{PUB_B}\"\n"
        ));
        assert_eq!(
            problems(&src),
            vec![
                "/etc/causeway/gw.toml:9: peer[2].name: name \"a\" is already used by peer[1]",
                "/etc/causeway/gw.toml:10: peer[2].public_key: public key is already used by peer[1]",
            ]
        );
    }

    #[test]
    fn own_key_as_peer() {
        let src = with_peers(&format!("[[peer]]\nname = \"me\"\npublic_key = \"{PUB_A}\"\n"));
        assert!(one_problem(&src).ends_with("peer[1].public_key: this is the interface's own public key"));
        let src = with_peers(&format!("[[peer]]\nname = \"me\"\npublic_key = \"{KEY_A}\"\n"));
        let p = one_problem(&src);
        assert!(p.contains("peer[1].public_key: this is the interface's private key") && !p.contains(KEY_A), "{p}");
    }

    #[test]
    fn overlapping_allowed_ips_between_peers() {
        let src = with_peers(&format!(
            "[[peer]]\nname = \"east\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.0.0.0/8\", \"10.0.0.0/9\", \"fd00::/16\"]\n\n[[peer]]\nname = \"west\"\npublic_key = \"{PUB_C}\"\nallowed_ips = [\"10.2.0.0/16\", \"192.0.2.0/24\", \"fd00::/16\"]\n"
        ));
        assert_eq!(
            problems(&src),
            vec![
                "/etc/causeway/gw.toml:12: peer[2].allowed_ips: 10.2.0.0/16 lies inside 10.0.0.0/9 of peer[1] (east); each address may belong to one peer only",
                "/etc/causeway/gw.toml:12: peer[2].allowed_ips: fd00::/16 is also routed to peer[1] (east); each address may belong to one peer only",
            ]
        );
    }

    #[test]
    fn nested_prefixes_within_one_peer_are_fine() {
        let src = with_peers(&format!(
            "[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.0.0.0/8\", \"10.1.0.0/16\"]\n"
        ));
        assert!(parse(&src).is_ok());
    }

    #[test]
    fn a_prefix_listed_twice_in_one_field_is_refused() {
        let src = with_peers(&format!(
            "[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\n  \"10.1.0.0/16\",\n  \"10.9.9.9\",\n  \"10.9.9.9/32\",\n  \"10.1.0.0/16\",\n]\n"
        ));
        assert_eq!(
            problems(&src),
            [
                "/etc/causeway/gw.toml:10: peer[1].allowed_ips: 10.9.9.9/32 is listed twice (first on line 9)",
                "/etc/causeway/gw.toml:11: peer[1].allowed_ips: 10.1.0.0/16 is listed twice (first on line 8)",
            ]
        );
        let p = one_problem(&format!(
            "[interface]\nprivate_key = \"{KEY_A}\"\naddresses = [\"10.9.0.1/24\", \"10.9.0.1/24\", \"10.9.0.1/16\"]\n"
        ));
        assert_eq!(p, "/etc/causeway/gw.toml:3: interface.addresses: 10.9.0.1/24 is listed twice (first on line 3)");
    }

    #[test]
    fn unknown_field_from_the_parser_is_located() {
        let p = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nlisen_port = 5\n"));
        assert!(
            p.starts_with("/etc/causeway/gw.toml:3: interface.lisen_port: unknown field `lisen_port`, expected one of"),
            "{p}"
        );
        let p = one_problem(&with_peers(&format!(
            "[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nendpoint = \"198.18.0.2:1\"\n"
        )));
        assert!(p.starts_with("/etc/causeway/gw.toml:7: peer[1].endpoint: unknown field `endpoint`"), "{p}");
        let p = one_problem("[interfaces]\n");
        assert!(p.contains("unknown field `interfaces`"), "{p}");
    }

    #[test]
    fn wrong_types_and_syntax() {
        let p = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nlisten_port = 70000\n"));
        assert!(p.starts_with("/etc/causeway/gw.toml:3: interface.listen_port:"), "{p}");
        let p = one_problem("[interface]\nmtu = \"big\"\n");
        assert!(p.starts_with("/etc/causeway/gw.toml:2: interface.mtu:"), "{p}");
        let p = one_problem(&with_peers(&format!(
            "[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\n  \"10.1.0.0/16\",\n  7,\n]\n"
        )));
        assert!(p.starts_with("/etc/causeway/gw.toml:9: peer[1].allowed_ips: invalid type"), "{p}");
        let p = one_problem("[interface\n");
        assert!(p.starts_with("/etc/causeway/gw.toml:1:"), "{p}");
    }

    #[test]
    fn interface_checks() {
        assert!(one_problem("[interface]\n").contains("interface: missing private_key"));
        assert!(one_problem("").contains("missing [interface] table"));
        let p = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nmtu = 100\n"));
        assert!(p.contains("interface.mtu: expected an MTU from 576 to"), "{p}");
        let p =
            one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\naddresses = [\"fd00::1/64\"]\nmtu = 1000\n"));
        assert!(p.contains("IPv6 addresses need at least 1280"), "{p}");
        let p = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nworkers = 5000\n"));
        assert!(p.contains("interface.workers"), "{p}");
        let p = one_problem(&format!("[interface]\nname = \"this-name-is-too-long\"\nprivate_key = \"{KEY_A}\"\n"));
        assert!(p.contains("interface.name"), "{p}");
        let c = parse(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nmtu = 34000\naddresses = [\"10.0.0.1/24\"]\n"))
            .unwrap();
        assert_eq!(c.interface.mtu, 34000, "jumbo MTUs are allowed");
        assert_eq!(c.interface.addresses[0].to_string(), "10.0.0.1/24", "interface addresses keep host bits");
    }

    #[test]
    fn routes_user_and_dns_refresh() {
        let iface = |extra: &str| format!("[interface]\nprivate_key = \"{KEY_A}\"\n{extra}");
        let c = parse(&iface("")).unwrap().interface;
        assert_eq!((c.routes, c.user, c.dns_refresh), (None, None, Some(DEFAULT_DNS_REFRESH)), "defaults");
        let c = parse(&iface("install_routes = true\nuser = \"causeway\"\ndns_refresh = 0\n")).unwrap().interface;
        assert_eq!((c.routes, c.user.as_deref(), c.dns_refresh), (Some(RouteTable::MAIN), Some("causeway"), None));
        let c = parse(&iface("install_routes = true\nroute_table = 100\ndns_refresh = 5\n")).unwrap().interface;
        assert_eq!((c.routes, c.dns_refresh.map(|d| d.as_secs())), (Some(RouteTable(100)), Some(5)));
        let p = one_problem(&iface("route_table = 100\n"));
        assert!(p.contains("gw.toml:3: interface.route_table: route_table needs install_routes = true"), "{p}");
        let p = one_problem(&iface("install_routes = true\nroute_table = 255\n"));
        assert!(p.contains("interface.route_table: expected 254 (main)"), "{p}");
        let p = one_problem(&iface("user = \"root; rm\"\n"));
        assert!(p.contains("gw.toml:3: interface.user: expected a user name"), "{p}");
        let p = one_problem(&iface("dns_refresh = 100000\n"));
        assert!(p.contains("interface.dns_refresh: expected 1 to 86400 seconds"), "{p}");
    }

    #[test]
    fn endpoints() {
        let src =
            |e: &str| with_peers(&format!("[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\nendpoints = [\"{e}\"]\n"));
        let p = |e: &str| problems(&src(e));
        assert!(p("198.18.0.2")[0].contains("has no port"));
        assert!(p("198.18.0.2:http")[0].contains("\"http\" is not a port number"));
        assert!(p("fd00::2:51820")[0].contains("needs brackets"));
        assert!(p("bad_host!:1")[0].contains("neither an IP address nor a DNS name"));
        assert!(p("198.18.0.2:0")[0].contains("port 0 cannot be sent to"));
        assert!(p("gw1.example:0")[0].contains("port 0 cannot be sent to"));
        assert!(parse(&src("gw-1.dc.example.:51820")).is_ok());
        assert_eq!(
            "fd00::2:51820".parse::<Endpoint>(),
            Err(crate::types::EndpointError::Brackets { host: "fd00::2".into(), port: 51820 })
        );
        assert_eq!("198.18.0.2".parse::<Endpoint>(), Err(crate::types::EndpointError::NoPort("198.18.0.2".into())));
    }

    #[test]
    fn missing_peer_fields_and_many_problems_at_once() {
        let src = with_peers("[[peer]]\nallowed_ips = [\"x\"]\n\n[[peer]]\nname = \"ok\"\n");
        let p = problems(&src);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].contains("peer[1]: missing name"));
        assert!(p.iter().any(|l| l.contains("peer[1]: missing public_key")));
        assert!(p.iter().any(|l| l.contains("peer[1].allowed_ips")));
        assert!(p.iter().any(|l| l.contains("peer[2]: missing public_key")));
    }

    #[test]
    fn mss_clamp_and_failover_settings() {
        let c = parse(&with_peers("")).unwrap();
        assert!(c.interface.mss_clamp, "on by default");
        let c = parse(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nmss_clamp = false\n")).unwrap();
        assert!(!c.interface.mss_clamp);
        let peer = |extra: &str| with_peers(&format!("[[peer]]\nname = \"x\"\npublic_key = \"{PUB_B}\"\n{extra}"));
        assert_eq!(parse(&peer("")).unwrap().peers[0].failover_after, DEFAULT_FAILOVER_AFTER);
        assert_eq!(parse(&peer("failover_after = 4\n")).unwrap().peers[0].failover_after.as_secs(), 4);
        assert!(one_problem(&peer("failover_after = 0\n"))
            .contains("peer[1].failover_after: expected 1 to 3600 seconds, got 0"));
    }

    #[test]
    fn key_and_key_file_together() {
        let p = one_problem(&format!("[interface]\nprivate_key = \"{KEY_A}\"\nprivate_key_file = \"/x\"\n"));
        assert!(p.contains("give either private_key or private_key_file, not both"));
    }

    #[cfg(unix)]
    #[test]
    fn private_key_file_relative_to_the_config_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gw.key");
        std::fs::write(&key, format!("{KEY_A}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let cfg = dir.path().join("gw.toml");
        std::fs::write(&cfg, "[interface]\nprivate_key_file = \"gw.key\"\n").unwrap();
        let err = crate::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("gw.toml:2: interface.private_key_file: key file") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = crate::load(&cfg).unwrap();
        assert_eq!(c.interface.private_key.public_key().to_base64(), PUB_A);
    }

    /// As a daemon that drops root finds them at start: key files given to
    /// the owner of the configuration, or to the user it switches to.
    #[test]
    fn a_key_file_may_belong_to_the_configuration_s_owner_or_user_only() {
        use std::os::unix::fs::{chown, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gw.key");
        std::fs::write(&key, format!("{KEY_A}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = dir.path().join("gw.toml");
        std::fs::write(&cfg, "[interface]\nprivate_key_file = \"gw.key\"\n").unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Giving files away takes root; CI runs the tests as root.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: files of other users cannot be made here");
            return;
        }
        chown(&cfg, Some(65534), None).unwrap();
        chown(&key, Some(65534), None).unwrap();
        assert_eq!(crate::load(&cfg).unwrap().interface.private_key.public_key().to_base64(), PUB_A);
        chown(&key, Some(65533), None).unwrap();
        let err = crate::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("gw.toml:2: interface.private_key_file: key file") && err.contains("belongs to uid 65533"),
            "{err}"
        );
        // Text from no file trusts no third owner.
        chown(&key, Some(65534), None).unwrap();
        let text = format!("[interface]\nprivate_key_file = \"{}\"\n", key.display());
        assert!(crate::parse(&text, &cfg).is_err());
        // A root-owned configuration whose daemon switches to a user that
        // owns the key (root:user 0640 configurations, keys of that user).
        chown(&cfg, Some(0), None).unwrap();
        assert!(crate::load(&cfg).is_err(), "root's configuration, another user's key");
        let Some((name, uid)) = ["nobody", "daemon", "bin"].iter().find_map(|n| {
            let u = nix::unistd::User::from_name(n).ok().flatten()?;
            Some((*n, u.uid.as_raw()))
        }) else {
            eprintln!("no system user to give the key to");
            return;
        };
        chown(&key, Some(uid), None).unwrap();
        std::fs::write(&cfg, format!("[interface]\nprivate_key_file = \"gw.key\"\nuser = \"{name}\"\n")).unwrap();
        assert_eq!(crate::load(&cfg).unwrap().interface.private_key.public_key().to_base64(), PUB_A);
    }

    #[test]
    fn unreadable_config_file() {
        let e = crate::load(Path::new("/nonexistent/gw.toml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/gw.toml: cannot read configuration:"));
    }

    #[test]
    fn the_example_config_parses() {
        // Parsed as text: a checkout does not keep the mode 0600 that
        // `load` asks of a file with keys in it.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/primary-dc.toml");
        let c = crate::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(c.interface.name.as_deref(), Some("cw0"));
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.peers[0].endpoints.len(), 2);
        assert_eq!(c.peers[2].persistent_keepalive, 25);
    }
}
