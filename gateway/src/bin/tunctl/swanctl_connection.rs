//! One swanctl.conf connection as one Causeway IPsec peer: its addresses,
//! its single pre-shared-key authentication round, its proposals and
//! times, and its children, which must all describe one child SA
//! (`swanctl_child.rs`). What
//! cannot be carried over is an error naming the setting, and so is a key
//! strongSwan does not know (as strongSwan refuses it); what Causeway has
//! no use for is listed, for a note. The choices made where strongSwan
//! and Causeway differ are listed in `import_swanctl.rs`.
//!
//! Invariant: a `Peer` is returned only for a connection without errors,
//! and every field it sets is recorded in `Conn::origins` with the setting
//! it came from, so the validator's complaints can be told against it.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use super::swanctl::{Section, Setting};
use super::swanctl_child::{children, routed};
use super::swanctl_keys::{unknown, Keys, CHILD_KEYS, CONN_KEYS, CONN_SECTIONS, ROUND_KEYS};
use super::swanctl_secrets::{self as secrets, IkeSecret};
use super::swanctl_values::{self as values, Id, Kind};

/// An IPsec peer in causeway_config's field names.
#[derive(Serialize, Clone, PartialEq, Debug)]
pub struct Peer {
    pub name: String,
    pub protocol: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub local_id: String,
    pub remote_id: String,
    pub psk_file: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ike_proposals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub esp_proposals: Vec<String>,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ike_lifetime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_lifetime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpd_interval: Option<u32>,
    pub initiate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encap: Option<&'static str>,
}

/// One connection, being mapped: what it became so far and what is wrong.
pub struct Conn<'a> {
    pub name: &'a str,
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    /// Settings not carried over, by their path in the connection.
    pub skipped: Vec<String>,
    /// Causeway field, the swanctl setting it came from, and where.
    pub origins: Vec<(&'static str, String, String)>,
    /// Set when no secret names the connection and its key file does not
    /// exist: the error, told once the rest has been checked too.
    pub missing_key: Option<String>,
}

impl Conn<'_> {
    pub(super) fn fail(&mut self, at: &str, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{at}: connection {}: {path}: {message}", self.name));
    }

    pub(super) fn from(&mut self, field: &'static str, path: &str, at: &str) {
        self.origins.push((field, path.to_string(), at.to_string()));
    }

    /// A setting read with `read`; `None` when absent or wrong (reported).
    pub(super) fn read<T>(
        &mut self,
        s: &Section,
        key: &str,
        path: &str,
        read: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let setting = s.get(key)?;
        match read(&setting.value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(&setting.at, path, e);
                None
            }
        }
    }

    /// Sorts the settings of `s` against swanctl's own: one the import
    /// reads passes, one Causeway has no use for is listed (`skipped`), and
    /// one strongSwan does not know is an error, as strongSwan makes it
    /// ("unknown option"): a typo such as `remote_addr` would otherwise
    /// give a peer without endpoints, or default proposals.
    ///
    /// `elsewhere`: the keys of the level where strongSwan takes what is
    /// not known here, and that level's name (a child's `esp_proposals`
    /// written in its connection).
    pub(super) fn check_keys(
        &mut self,
        s: &Section,
        prefix: &str,
        (read, unused): Keys,
        elsewhere: Option<(Keys, &str)>,
    ) {
        for x in &s.settings {
            let key = x.key.as_str();
            if read.contains(&key) {
                continue;
            }
            if unused.contains(&key) {
                self.skipped.push(format!("{prefix}{key}"));
                continue;
            }
            let why = match elsewhere.filter(|((r, u), _)| r.contains(&key) || u.contains(&key)) {
                Some((_, level)) => format!("not a setting of this level; strongSwan takes it in {level}"),
                None => unknown("setting", key, read.iter().chain(unused).copied()),
            };
            self.fail(&x.at, &format!("{prefix}{key}"), why);
        }
    }

    /// A subsection strongSwan has no place for at `prefix`.
    pub(super) fn unknown_section(&mut self, s: &Section, prefix: &str, known: &[&str]) {
        self.fail(&s.at, &format!("{prefix}{} {{ }}", s.name), unknown("section", &s.name, known.iter().copied()));
    }
}

/// The first plain address of an addrs list (not a name, range or subnet).
fn first_address(list: Option<&Setting>) -> Option<IpAddr> {
    list.and_then(|l| values::list(&l.value).find_map(|a| a.parse().ok()))
}

/// remote_addrs as endpoints: addresses and names, `%any` left out.
fn endpoints(c: &mut Conn, conn: &Section) -> Vec<String> {
    let port = c.read(conn, "remote_port", "remote_port", values::port).unwrap_or(500);
    let Some(addrs) = conn.get("remote_addrs") else { return Vec::new() };
    let mut out = Vec::new();
    let mut any = false;
    for a in values::list(&addrs.value) {
        if a.starts_with("%any") {
            any = true;
            continue;
        }
        let range = a
            .split_once('-')
            .is_some_and(|(x, y)| x.trim().parse::<IpAddr>().is_ok() && y.trim().parse::<IpAddr>().is_ok());
        if a.contains('/') || range {
            c.fail(&addrs.at, "remote_addrs", format!("{a} is a subnet or range; Causeway contacts single addresses or names (for a peer that always initiates, leave remote_addrs out)"));
            continue;
        }
        out.push(match a.parse::<IpAddr>() {
            // Bracketed: an IPv6 address whose last group reads as a port
            // (2001:db8::4500) is refused unbracketed as ambiguous.
            Ok(IpAddr::V6(v6)) if port == 500 => format!("[{v6}]"),
            Ok(_) if port == 500 => a.to_string(),
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ if port == 500 => a.to_string(),
            _ => format!("{a}:{port}"),
        });
    }
    c.from("endpoints", "remote_addrs", &addrs.at);
    if any && !out.is_empty() {
        c.notes.push(format!(
            "remote_addrs ends in %any: strongSwan would also answer this peer from any other address; \
             Causeway answers it only from {} (a peer without endpoints answers from any address, \
             but cannot initiate)",
            out.join(", ")
        ));
    }
    out
}

/// The single `local`/`remote` round of a connection: its identity.
fn auth_round(c: &mut Conn, conn: &Section, side: &str, own: Option<IpAddr>) -> Option<causeway_config::Identity> {
    let rounds: Vec<&Section> = conn.sections.iter().filter(|s| s.name.starts_with(side)).collect();
    let Some(round) = rounds.first() else {
        c.fail(&conn.at, side, format!("no {side} {{ }} section: strongSwan then authenticates with a certificate (auth = pubkey); Causeway takes auth = psk only"));
        return None;
    };
    if rounds.len() > 1 {
        let names: Vec<&str> = rounds.iter().map(|r| r.name.as_str()).collect();
        c.fail(
            &round.at,
            side,
            format!(
                "several authentication rounds ({}); Causeway authenticates once, with a pre-shared key",
                names.join(", ")
            ),
        );
    }
    let name = &round.name;
    match round.get("auth") {
        None => c.fail(&round.at, &format!("{name}.auth"), "not set, so strongSwan uses pubkey (certificates); Causeway authenticates with pre-shared keys only (auth = psk)"),
        Some(a) if a.value.trim() != "psk" => c.fail(&a.at, &format!("{name}.auth"), format!("{}: Causeway authenticates with pre-shared keys only (auth = psk)", a.value.trim())),
        Some(_) => {}
    }
    for key in ["certs", "pubkeys", "cacerts", "ca_id"] {
        if let Some(s) = round.get(key) {
            c.fail(
                &s.at,
                &format!("{name}.{key}"),
                "certificates and public keys are not supported; Causeway authenticates with pre-shared keys",
            );
        }
    }
    for sub in &round.sections {
        if !sub.name.starts_with("cert") && !sub.name.starts_with("cacert") {
            c.unknown_section(sub, &format!("{name}."), &["cert", "cacert"]);
            continue;
        }
        c.fail(
            &sub.at,
            &format!("{name}.{}", sub.name),
            "certificates and tokens are not supported; Causeway authenticates with pre-shared keys",
        );
    }
    c.check_keys(round, &format!("{name}."), ROUND_KEYS, None);
    let field = if side == "local" { "local_id" } else { "remote_id" };
    let path = format!("{name}.id");
    let id = match round.get("id") {
        Some(s) => match values::identity(&s.value) {
            Ok(id) => {
                c.from(field, &path, &s.at);
                id
            }
            Err(e) => {
                c.fail(&s.at, &path, e);
                return None;
            }
        },
        None => Id::Any,
    };
    match (id, own) {
        (Id::Exact(id), _) => Some(id),
        (Id::Any, Some(ip)) => {
            let addrs = if side == "local" { "local_addrs" } else { "remote_addrs" };
            c.notes.push(format!(
                "{path} is not set: using {ip} from {addrs}, the identity strongSwan and SRXs send by default"
            ));
            Some(causeway_config::Identity::Address(ip))
        }
        (Id::Any, None) => {
            let addrs = if side == "local" { "local_addrs" } else { "remote_addrs" };
            c.fail(&round.at, &path, format!("no identity (strongSwan's %any); Causeway needs the one the peer uses: set {path}, or one address in {addrs}"));
            None
        }
    }
}

/// Refuses the settings and subsections strongSwan does not know, and
/// lists those Causeway has no use for.
fn check_connection_keys(c: &mut Conn, conn: &Section) {
    c.check_keys(conn, "", CONN_KEYS, Some((CHILD_KEYS, "a child (children.<name>)")));
    let round = |s: &Section| s.name.starts_with("local") || s.name.starts_with("remote");
    for sub in conn.sections.iter().filter(|s| s.name != "children" && !round(s)) {
        c.unknown_section(sub, "", CONN_SECTIONS);
    }
}

/// local_addrs gives default identities and `dynamic` selectors, but not
/// the address IKE is sent from: Causeway takes the one its route picks.
/// The note says so, in place of the list of keys not imported.
fn note_local_addrs(c: &mut Conn, conn: &Section) {
    let Some(s) = conn.get("local_addrs") else { return };
    c.skipped.retain(|k| k != "local_addrs");
    c.notes.push(format!(
        "local_addrs = {} is not imported: Causeway sends IKE from the source address of the route to \
         the peer; if the peer expects this address, it must be on this host and be the one that route uses",
        s.value.as_str()
    ));
}

/// The secret strongSwan would use for the connection. Without one the
/// key must already be in `psk_file` (the operator made it); otherwise
/// `missing_key` names the file to create: a peer whose key file does not
/// exist would not load.
fn secret<'s, 'a>(
    c: &mut Conn,
    conn: &Section,
    secrets: &'s [IkeSecret<'a>],
    (local, remote): (&causeway_config::Identity, &causeway_config::Identity),
    psk_file: &str,
) -> Option<&'s IkeSecret<'a>> {
    let ids = format!("{} and {}", values::identity_text(local), values::identity_text(remote));
    let chosen = secrets::choose(secrets, local, remote);
    match chosen {
        Some(s) if !secrets::names(s, remote) => c.notes.push(format!(
            "uses secrets.{}, which does not name the remote identity {} (strongSwan would pick it too)",
            s.name,
            values::identity_text(remote)
        )),
        Some(_) => {}
        None if Path::new(psk_file).symlink_metadata().is_ok() => {
            c.notes.push(format!("no secret in secrets {{ ike... }} names its identities ({ids}): using {psk_file}"));
        }
        None => {
            c.missing_key = Some(format!(
                "{}: connection {}: no secret in secrets {{ ike... }} names its identities ({ids}): create \
                 {psk_file} (mode 0600) holding the pre-shared key, as 0x and hex, 0s and base64, or the text \
                 itself, and import again (it then uses that file)",
                conn.at, c.name
            ));
        }
    }
    chosen
}

/// One connection as a peer, and the secret it uses (if one matches).
pub fn connection<'a, 's>(
    conn: &'a Section,
    secrets: &'s [IkeSecret<'a>],
    psk_dir: &Path,
) -> (Conn<'a>, Option<(Peer, Option<&'s IkeSecret<'a>>)>) {
    let mut c = Conn {
        name: &conn.name,
        errors: Vec::new(),
        notes: Vec::new(),
        skipped: Vec::new(),
        origins: Vec::new(),
        missing_key: None,
    };
    if let Err(e) = causeway_config::rules::peer_name(&conn.name) {
        c.fail(&conn.at, "name", format!("a connection's name becomes its peer's name: {e}"));
    }
    if let Some(v) = conn.get("version") {
        // 0 is any version, IKEv2 among them.
        match values::number(&v.value, "0, 1 or 2") {
            Ok(0 | 2) => {}
            Ok(_) => c.fail(&v.at, "version", format!("{}: Causeway speaks IKEv2 only (version = 2)", v.value.trim())),
            Err(e) => c.fail(&v.at, "version", e),
        }
    }
    for key in ["vips", "pools"] {
        if let Some(s) = conn.get(key) {
            c.fail(&s.at, key, "virtual IPs are not supported: Causeway routes fixed prefixes (local_ts, remote_ts)");
        }
    }
    if let Some(s) =
        conn.get("ppk_id").or_else(|| conn.get("ppk_required").filter(|s| values::boolean(&s.value).unwrap_or(true)))
    {
        c.fail(&s.at, &s.key, "post-quantum preshared keys (RFC 8784) are not supported");
    }
    check_connection_keys(&mut c, conn);
    note_local_addrs(&mut c, conn);
    if let (None, Some(r)) = (conn.get("rekey_time"), conn.get("reauth_time")) {
        c.notes.push(values::reauth_note(&r.value));
    }

    let own = (first_address(conn.get("local_addrs")), first_address(conn.get("remote_addrs")));
    let endpoints = endpoints(&mut c, conn);
    let local_id = auth_round(&mut c, conn, "local", own.0);
    let remote_id = auth_round(&mut c, conn, "remote", own.1);
    let ike_proposals =
        c.read(conn, "proposals", "proposals", |v| values::proposals(v, Kind::Ike)).flatten().unwrap_or_default();
    if let Some(s) = conn.get("proposals") {
        c.from("ike_proposals", "proposals", &s.at);
    }
    let seconds = |c: &mut Conn, key: &str, field: &'static str| {
        let s = conn.get(key)?;
        c.from(field, key, &s.at);
        let v = c.read(conn, key, key, values::seconds)?;
        Some((v as u32, s.at.as_str()))
    };
    let ike_lifetime = seconds(&mut c, "rekey_time", "ike_lifetime").map(|(v, at)| {
        if v == 0 {
            c.fail(at, "rekey_time", "0 turns rekeying off; Causeway always rekeys IKE SAs (its default is 28800 s)");
        }
        v
    });
    let dpd_interval = seconds(&mut c, "dpd_delay", "dpd_interval").map(|(v, _)| v);
    let encap = c.read(conn, "encap", "encap", values::boolean).and_then(|yes| yes.then_some("always"));
    let child = children(&mut c, conn, own);

    let psk_path = psk_dir.join(format!("{}.psk", conn.name));
    let (Some(local_id), Some(remote_id), Some(child), true) = (local_id, remote_id, child, c.errors.is_empty()) else {
        return (c, None);
    };
    let Some(psk_file) = psk_path.to_str().map(String::from) else {
        c.fail(&conn.at, "name", format!("{} is not UTF-8", psk_path.display()));
        return (c, None);
    };
    let secret = secret(&mut c, conn, secrets, (&local_id, &remote_id), &psk_file);
    // strongSwan cannot start toward %any either; Causeway refuses the
    // setting outright, so the peer is imported as one that answers.
    let initiate = child.initiate && !endpoints.is_empty();
    if child.initiate && !initiate {
        c.notes.push(
            "start_action = start without remote_addrs: nothing to start toward; imported as a peer that \
                      answers only (initiate = false)"
                .into(),
        );
    }
    let peer = Peer {
        name: conn.name.clone(),
        protocol: "ipsec",
        endpoints,
        allowed_ips: routed(&child.remote_ts),
        local_id: values::identity_text(&local_id),
        remote_id: values::identity_text(&remote_id),
        psk_file,
        ike_proposals,
        esp_proposals: child.esp_proposals,
        local_ts: child.local_ts.iter().map(ToString::to_string).collect(),
        remote_ts: child.remote_ts.iter().map(ToString::to_string).collect(),
        ike_lifetime,
        child_lifetime: child.lifetime,
        dpd_interval,
        initiate,
        encap,
    };
    if let Some(o) = c.origins.iter().find(|o| o.0 == "remote_ts").cloned() {
        c.origins.push(("allowed_ips", o.1, o.2));
    }
    (c, Some((peer, secret)))
}
