//! `tunctl import-wg`: a wg-quick .conf as Causeway's TOML. The result is
//! built as data and written by the `toml` crate, so names and keys are
//! quoted correctly whatever they hold, then checked by parsing it with
//! `causeway_config`, which decides what is valid. wg-quick's routes carry
//! over: it routes every AllowedIPs prefix unless `Table = off`, so the
//! import turns `install_routes` on (with `route_table` for `Table = N`).

use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use zeroize::Zeroizing;

/// The part of Causeway's file format a wg-quick file fills, in its field
/// names. causeway_config's own schema is private and read-only; the
/// parse at the end holds the two together.
#[derive(Serialize)]
struct File {
    interface: Interface,
    #[serde(rename = "peer", skip_serializing_if = "Vec::is_empty")]
    peers: Vec<Peer>,
}

#[derive(Serialize, Default)]
struct Interface {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<Zeroizing<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_port: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    install_routes: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    route_table: Option<u32>,
}

#[derive(Serialize, Default)]
struct Peer {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preshared_key: Option<Zeroizing<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    endpoints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_keepalive: Option<u16>,
}

/// A setting wg-quick takes once.
fn once<T>(slot: &mut Option<T>, value: T, at: &str, key: &str) -> anyhow::Result<()> {
    if slot.is_some() {
        bail!("{at}: {key} is given twice");
    }
    *slot = Some(value);
    Ok(())
}

fn number<T: std::str::FromStr>(v: &str, at: &str, key: &str) -> anyhow::Result<T> {
    v.parse().map_err(|_| anyhow::anyhow!("{at}: {key}: expected a number, got {v:?}"))
}

/// wg-quick's comma-separated lists, as wg-quick adds up repeated lines.
/// wg-quick splits its own Address on blanks too (`${value//,/ }`, then
/// the shell's words); wg(8)'s AllowedIPs has no blanks left to split on.
fn extend(list: &mut Vec<String>, v: &str) {
    let items = v.split([',', ' ', '\t']).filter(|x| !x.is_empty());
    list.extend(items.map(String::from));
}

/// AllowedIPs, with host bits cleared where a prefix has them: wg(8) and
/// the kernel (and wireguard-go) take `10.2.0.1/16` as 10.2.0.0/16, so a
/// file that runs under wg-quick imports, with a note; the configuration
/// refuses such a prefix written by hand.
fn extend_allowed(list: &mut Vec<String>, v: &str, at: &str) {
    let start = list.len();
    extend(list, v);
    for item in &mut list[start..] {
        if let Ok(net) = item.parse::<ipnet::IpNet>() {
            if net.trunc() != net {
                eprintln!(
                    "tunctl: {at}: AllowedIPs {item} has host bits set; imported as {}, as wg routes it",
                    net.trunc()
                );
                *item = net.trunc().to_string();
            }
        }
    }
}

/// wg(8)'s blanks (wireguard-tools ctype.h, char_is_space), which take
/// in \v too, unlike `char::is_ascii_whitespace`; wg-quick's
/// `[[:space:]]` is the same six.
fn blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// A line as wg(8) and wg-quick read it: both end it at its first `#`,
/// wherever that is (config.c, config_read_line; wg-quick's
/// `${line%%\#*}`), which cannot cut a value short: no key, address or
/// number holds one.
fn uncommented(raw: &str) -> &str {
    raw.split('#').next().unwrap_or_default().trim_matches(blank)
}

/// wg(8) drops every blank of a line before reading it, not only those
/// at its ends ("Endpoint = host : 51820" is "host:51820"). Zeroized and
/// never grown, as it may hold a key: a reallocation would leave a copy.
fn squeezed(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.extend(text.chars().filter(|&c| !blank(c)));
    out
}

/// A setting's name as it may be printed. A key line missing its `=`
/// splits at the key's own base64 padding, leaving the key in the name
/// ("PrivateKey yAnz...Bmk"): a name that is not letters alone is not
/// shown.
fn shown(key: &str) -> &str {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphabetic()) {
        key
    } else {
        "(a line that is not Key = Value; not shown, as it may hold a key)"
    }
}

/// The [Interface] settings wg-quick takes itself (parse_options), by
/// name without regard to case, blanks trimmed only at both ends; every
/// other line goes to wg(8), which knows none of these.
const WG_QUICK_KEYS: [&str; 9] =
    ["Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig"];

/// Refuses a wg-quick setting that wg-quick would not take itself: one
/// with blanks inside its name, or outside a line it reads as
/// `[Interface]` (it compares that line whole, so `[ Interface ]` is none).
/// wg-quick passes such a line to wg(8), which squeezes the blanks out,
/// knows no such setting and refuses the file. Only the setting's own
/// name is printed: the line may hold a key.
fn check_wg_quick_key(key: &str, setting: &str, in_interface: bool, at: &str) -> anyhow::Result<()> {
    let Some(name) = WG_QUICK_KEYS.iter().find(|k| k.eq_ignore_ascii_case(setting)) else { return Ok(()) };
    if key.contains(blank) {
        bail!(
            "{at}: interface setting {name} has blanks inside its name: wg-quick takes its own settings by name \
             and passes this line to wg(8), which has no setting {name} and refuses the file; write {name}"
        );
    }
    if !in_interface {
        bail!(
            "{at}: interface setting {name} is not under a line wg-quick reads as [Interface] (that line \
             exactly, in any case, no blanks inside the brackets): wg-quick passes it to wg(8), which has no setting {name} and \
             refuses the file"
        );
    }
    Ok(())
}

/// wg-quick's `Table =` as Causeway's routing: wg-quick routes every
/// AllowedIPs prefix through the interface unless the table is `off`, in
/// the main table for `auto` (its default, also an empty value) and
/// `main`, else in the table given (`ip route add ... table N`). Returns
/// (install_routes, route_table).
fn routing(table: Option<&(String, usize)>, file: &Path) -> anyhow::Result<(bool, Option<u32>)> {
    let Some((value, line)) = table else { return Ok((true, None)) };
    match value.as_str() {
        "off" => Ok((false, None)),
        "" | "auto" | "main" => Ok((true, None)),
        // A name from /etc/iproute2/rt_tables would be this host's guess.
        v => v.parse().map(|n| (true, Some(n))).map_err(|_| {
            anyhow::anyhow!(
                "{}:{line}: Table: expected off, auto, main or a table number, got {v:?} (write a named table's number)",
                file.display()
            )
        }),
    }
}

/// What the import did with wg-quick's routes, for stderr; nothing when
/// they are off, Causeway's default too.
fn routes_note(
    table: Option<&(String, usize)>,
    routes: (bool, Option<u32>),
    file: &Path,
    peers: &[Peer],
) -> Option<String> {
    let at = match table {
        None => format!("{}: no Table line", file.display()),
        Some((v, line)) => format!("{}:{line}: Table = {v}", file.display()),
    };
    let (fields, place) = match routes {
        (false, _) => return None,
        (true, None) => ("install_routes = true".to_string(), "the main table".to_string()),
        (true, Some(n)) => (format!("install_routes = true, route_table = {n}"), format!("table {n}")),
    };
    let mut note = format!(
        "{at}: wg-quick routes each peer's AllowedIPs through the interface, so {fields}: causewayd routes them in {place}"
    );
    if peers.iter().flat_map(|p| &p.allowed_ips).any(|a| a.ends_with("/0")) {
        note.push_str("; not 0.0.0.0/0 or ::/0, which causewayd never routes (they would carry the tunnel's own UDP)");
        // In its default table wg-quick sends them by policy routing.
        if routes.1.is_none() {
            note.push_str(": wg-quick's policy routing for them is not carried over");
        }
    }
    Some(note)
}

/// Where the fields of the converted file came from in the wg-quick file:
/// (the field's path as `causeway_config` names it, the wg-quick key, the
/// line), so that a problem found in the converted file is reported at
/// the line of the file the operator wrote.
#[derive(Default)]
struct Origins(Vec<(String, &'static str, usize)>);

impl Origins {
    /// The first line a field came from (wg-quick adds up repeated lists).
    fn note(&mut self, path: String, key: &'static str, line: usize) {
        if !self.0.iter().any(|o| o.0 == path) {
            self.0.push((path, key, line));
        }
    }

    /// The origin of `field` (`peer[1].allowed_ips[0]` is that of
    /// `peer[1].allowed_ips`, else that of `peer[1]`).
    fn of(&self, field: &str) -> Option<&(String, &'static str, usize)> {
        let within = |p: &str| {
            field.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        };
        self.0.iter().filter(|o| within(&o.0)).max_by_key(|o| o.0.len())
    }
}

/// Converts the file; settings Causeway does not take are named on stderr.
pub fn import_wg(file: &Path) -> anyhow::Result<Zeroizing<String>> {
    let src = super::read_secrets_input(file)?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("cw0");
    let mut interface = Interface { name: name.to_string(), ..Default::default() };
    let mut peers: Vec<Peer> = Vec::new();
    let mut in_peer = false;
    // Whether wg(8) has seen a section line: it refuses a setting above
    // any ("Line unrecognized").
    let mut in_section = false;
    // Whether wg-quick reads the current section as its [Interface].
    let mut wg_quick_interface = false;
    // A `# Name = …` comment names a peer either above its [Peer] line or
    // inside its section before its first setting; one that names none
    // (replaced by another, or above [Interface]) is reported.
    let mut pending_name: Option<(String, usize)> = None;
    let mut peer_named = false;
    let mut peer_has_settings = false;
    let unused = |name: Option<(String, usize)>, why: &str| {
        if let Some((_, line)) = name {
            eprintln!("tunctl: {}:{line}: # Name {why}; not used", file.display());
        }
    };
    let mut table: Option<(String, usize)> = None;
    let mut origins = Origins::default();
    for (n, raw) in src.lines().enumerate() {
        let at = format!("{}:{}", file.display(), n + 1);
        if let Some(c) = raw.trim_matches(blank).strip_prefix('#') {
            if let Some((k, v)) = c.split_once('=') {
                if k.trim().eq_ignore_ascii_case("name") {
                    let named = (v.trim().to_string(), n + 1);
                    if in_peer && !peer_named && !peer_has_settings {
                        let section = format!("peer[{}]", peers.len());
                        origins.note(format!("{section}.name"), "# Name", n + 1);
                        peers.last_mut().context("a [Peer] section holds a peer")?.name = named.0;
                        peer_named = true;
                    } else {
                        unused(pending_name.replace(named), "is followed by another before any [Peer]");
                    }
                }
            }
            continue;
        }
        let line = uncommented(raw);
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            wg_quick_interface = line.eq_ignore_ascii_case("[interface]");
        }
        let header = squeezed(line);
        if header.eq_ignore_ascii_case("[interface]") {
            unused(pending_name.take(), "is above [Interface], not a [Peer]");
            in_peer = false;
            in_section = true;
            continue;
        }
        if header.eq_ignore_ascii_case("[peer]") {
            in_peer = true;
            in_section = true;
            let section = format!("peer[{}]", peers.len() + 1);
            origins.note(section.clone(), "[Peer]", n + 1);
            let (name, named) = match pending_name.take() {
                Some((name, line)) => {
                    origins.note(format!("{section}.name"), "# Name", line);
                    (name, true)
                }
                None => (format!("peer-{}", peers.len() + 1), false),
            };
            (peer_named, peer_has_settings) = (named, false);
            peers.push(Peer { name, ..Default::default() });
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { bail!("{at}: expected Key = Value") };
        peer_has_settings |= in_peer;
        let (key, setting) = (k.trim_matches(blank), squeezed(k).to_ascii_lowercase());
        if !in_section {
            bail!(
                "{at}: setting {} is above any [Interface] or [Peer] line, where wg(8) refuses it; \
                 put it under [Interface]",
                shown(key)
            );
        }
        if !in_peer {
            check_wg_quick_key(key, &setting, wg_quick_interface, &at)?;
        }
        // wg-quick reads its own keys trimmed only; the rest go to wg(8).
        let v = match setting.as_str() {
            "address" | "mtu" | "table" if !in_peer => Zeroizing::new(v.trim_matches(blank).to_string()),
            _ => squeezed(v),
        };
        let v = v.as_str();
        let field = match (in_peer, setting.as_str()) {
            (false, "privatekey") => Some(("interface.private_key", "PrivateKey")),
            (false, "listenport") => Some(("interface.listen_port", "ListenPort")),
            (false, "address") => Some(("interface.addresses", "Address")),
            (false, "mtu") => Some(("interface.mtu", "MTU")),
            (false, "table") => Some(("interface.route_table", "Table")),
            (true, "publickey") => Some(("public_key", "PublicKey")),
            (true, "presharedkey") => Some(("preshared_key", "PresharedKey")),
            (true, "endpoint") => Some(("endpoints", "Endpoint")),
            (true, "allowedips") => Some(("allowed_ips", "AllowedIPs")),
            (true, "persistentkeepalive") => Some(("persistent_keepalive", "PersistentKeepalive")),
            _ => None,
        };
        if let Some((path, wg_key)) = field {
            let path = if in_peer { format!("peer[{}].{path}", peers.len()) } else { path.to_string() };
            origins.note(path, wg_key, n + 1);
        }
        match (in_peer, setting.as_str()) {
            (false, "privatekey") => once(&mut interface.private_key, Zeroizing::new(v.to_string()), &at, key)?,
            (false, "listenport") => once(&mut interface.listen_port, number(v, &at, key)?, &at, key)?,
            (false, "address") => extend(&mut interface.addresses, v),
            (false, "mtu") => once(&mut interface.mtu, number(v, &at, key)?, &at, key)?,
            (false, "table") => once(&mut table, (v.to_string(), n + 1), &at, key)?,
            (true, setting) => {
                let peer = peers.last_mut().context("peer setting outside [Peer]")?;
                match setting {
                    "publickey" => once(&mut peer.public_key, v.to_string(), &at, key)?,
                    "presharedkey" => once(&mut peer.preshared_key, Zeroizing::new(v.to_string()), &at, key)?,
                    "endpoint" if !peer.endpoints.is_empty() => bail!("{at}: {key} is given twice"),
                    "endpoint" => peer.endpoints.push(v.to_string()),
                    "allowedips" => extend_allowed(&mut peer.allowed_ips, v, &at),
                    "persistentkeepalive" if v.eq_ignore_ascii_case("off") => {}
                    "persistentkeepalive" => once(&mut peer.persistent_keepalive, number(v, &at, key)?, &at, key)?,
                    _ => eprintln!("tunctl: {at}: peer setting {} is not imported", shown(key)),
                }
            }
            (false, _) => eprintln!("tunctl: {at}: interface setting {} is not imported", shown(key)),
        }
    }
    unused(pending_name, "is below the last [Peer]'s settings, with no [Peer] after it");
    let routes = routing(table.as_ref(), file)?;
    (interface.install_routes, interface.route_table) = routes;
    let note = routes_note(table.as_ref(), routes, file, &peers);
    let body = Zeroizing::new(toml::to_string(&File { interface, peers }).context("cannot write the TOML")?);
    // A path is free text; a comment must stay on its line.
    let origin: String = file.display().to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut out = Zeroizing::new(format!("# Imported from {origin} by tunctl import-wg.\n"));
    out.push_str(&body);
    causeway_config::parse(&out, file).map_err(|e| {
        let shown = file.display();
        let problems: Vec<String> = e
            .problems()
            .iter()
            .map(|p| match origins.of(&p.field) {
                Some((_, key, line)) => format!("{shown}:{line}: {key}: {}", p.message),
                None => format!("{shown}: {} (of the converted file): {}", p.field, p.message),
            })
            .collect();
        anyhow::anyhow!("the imported configuration is not valid:\n{}", problems.join("\n"))
    })?;
    if let Some(note) = note {
        eprintln!("tunctl: {note}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use causeway_wireguard::StaticSecret;

    fn b64(b: &[u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn key() -> StaticSecret {
        StaticSecret::random(&mut rand_core::OsRng)
    }

    fn import(text: &str) -> anyhow::Result<Zeroizing<String>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wg7.conf");
        std::fs::write(&file, text).unwrap();
        import_wg(&file)
    }

    // "PrivateKey <key>" without its '=' splits at the key's padding, so
    // the setting's name holds the key, and unknown names are printed.
    #[test]
    fn a_name_that_may_hold_a_key_is_not_printed() {
        let k = b64(key().as_bytes());
        let line = format!("PrivateKey {k}");
        let (name, _) = line.split_once('=').unwrap();
        assert!(!shown(name).contains(&k[..20]), "{}", shown(name));
        assert!(!shown("Private Key").contains("Private"));
        assert_eq!((shown("DNS"), shown("PostUp"), shown("SaveConfig")), ("DNS", "PostUp", "SaveConfig"));
    }

    #[test]
    fn imports_a_wg_quick_file() {
        let own = key();
        let (k, psk) = (b64(own.as_bytes()), b64(key().as_bytes()));
        let (p1, p2) = (b64(key().public_key().as_bytes()), b64(key().public_key().as_bytes()));
        let toml = import(&format!(
            "[Interface]\nPrivateKey = {k}\nAddress = 10.40.0.1/24, fd00:40::1/64\nListenPort = 51000\nMTU = 1380\nDNS = 10.0.0.53\n\n# Name = dc-east\n[Peer]\nPublicKey = {p1}\nPresharedKey = {psk}\nEndpoint = 198.18.0.2:51820\nAllowedIPs = 10.41.0.0/16, 10.40.0.2/32\nPersistentKeepalive = 25\n\n[Peer]\nPublicKey = {p2}\nAllowedIPs = 10.42.0.0/16\nAllowedIPs = 10.43.0.0/16\nPersistentKeepalive = off\n"
        ))
        .unwrap();
        assert!(toml.starts_with("# Imported from "), "{}", toml.as_str());
        let cfg = causeway_config::parse(&toml, Path::new("wg7.toml")).unwrap();
        assert_eq!(cfg.interface.name.as_deref(), Some("wg7"));
        assert_eq!(cfg.interface.private_key.public_key(), own.public_key());
        assert_eq!(cfg.interface.listen_port, 51000);
        assert_eq!(cfg.interface.mtu, 1380);
        assert_eq!(cfg.interface.addresses.len(), 2);
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].name, "dc-east");
        assert_eq!(cfg.peers[0].public_key.to_base64(), p1);
        assert!(cfg.peers[0].preshared_key.is_some());
        assert_eq!(cfg.peers[0].endpoints[0].to_string(), "198.18.0.2:51820");
        assert_eq!(cfg.peers[0].persistent_keepalive, 25);
        assert_eq!(cfg.peers[0].allowed_ips.len(), 2);
        assert_eq!(cfg.peers[1].name, "peer-2");
        assert_eq!(cfg.peers[1].persistent_keepalive, 0);
        assert_eq!(cfg.peers[1].allowed_ips.len(), 2, "repeated lines add up, as in wg-quick");
    }

    /// A wg-quick file with a setting of each kind Causeway takes, line
    /// by line, and a check that `toml` holds them all.
    fn every_setting() -> (Vec<String>, impl Fn(&str)) {
        let own = key();
        let (k, psk) = (b64(own.as_bytes()), b64(key().as_bytes()));
        let p = b64(key().public_key().as_bytes());
        let lines = [
            "[Interface]".to_string(),
            format!("PrivateKey = {k}"),
            "Address = 10.40.0.1/24, fd00:40::1/64".into(),
            "ListenPort = 51000".into(),
            "MTU = 1380".into(),
            "Table = 1234".into(),
            "# Name = site-b".into(),
            "[Peer]".into(),
            format!("PublicKey = {p}"),
            format!("PresharedKey = {psk}"),
            "Endpoint = 198.18.0.2:51820".into(),
            "AllowedIPs = 10.41.0.0/16, fd00:41::/64".into(),
            "PersistentKeepalive = 25".into(),
        ];
        let check = move |toml: &str| {
            let cfg = causeway_config::parse(toml, Path::new("wg7.toml")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
            let i = &cfg.interface;
            assert_eq!(i.private_key.public_key(), own.public_key());
            assert_eq!(strings(&i.addresses), ["10.40.0.1/24", "fd00:40::1/64"]);
            assert_eq!((i.listen_port, i.mtu, i.routes), (51000, 1380, Some(causeway_config::RouteTable(1234))));
            let peer = &cfg.peers[0];
            assert_eq!((peer.name.as_str(), peer.public_key.to_base64()), ("site-b", p.clone()));
            assert_eq!(peer.preshared_key.as_ref().map(|k| b64(k.as_bytes())), Some(psk.clone()));
            assert_eq!(strings(&peer.endpoints), ["198.18.0.2:51820"]);
            assert_eq!(strings(&peer.allowed_ips), ["10.41.0.0/16", "fd00:41::/64"]);
            assert_eq!(peer.persistent_keepalive, 25);
        };
        (lines.to_vec(), check)
    }

    fn strings<T: ToString>(v: &[T]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    // wg(8) and wg-quick end every line at its first '#' (config.c,
    // config_read_line; wg-quick's `${line%%\#*}`), headers and keys too.
    #[test]
    fn a_comment_after_a_value_is_dropped_as_wg_drops_it() {
        let (lines, check) = every_setting();
        for (n, line) in lines.iter().enumerate().filter(|(_, l)| !l.starts_with('#')) {
            for comment in ["  # site B", "#x", "\t#"] {
                let mut text = lines.clone();
                text[n] = format!("{line}{comment}");
                let toml = import(&(text.join("\n") + "\n")).unwrap_or_else(|e| panic!("{:?}: {e}", text[n]));
                check(&toml);
                assert!(toml.lines().skip(1).all(|l| !l.contains('#')), "{:?}: {}", text[n], toml.as_str());
            }
        }
    }

    // wg(8) drops every blank of its lines before reading them; wg-quick
    // trims its own values and splits Address on commas and blanks.
    #[test]
    fn blanks_are_read_as_wg_and_wg_quick_read_them() {
        let (lines, check) = every_setting();
        let (k, p) = (lines[1].replace("PrivateKey = ", ""), lines[8].replace("PublicKey = ", ""));
        for (n, line) in [
            (1, format!("Private Key = {k}")),
            (2, "Address = 10.40.0.1/24 fd00:40::1/64".into()),
            (2, "Address =10.40.0.1/24\t,fd00:40::1/64 ".into()),
            (7, " [Peer ]".into()),
            (8, format!("PublicKey = {}  {}", &p[..20], &p[20..])),
            (10, "Endpoint = 198.18.0.2 : 51820".into()),
            (11, "AllowedIPs = 10.41.0.0 /16 ,fd00:41::/64".into()),
            (12, "Persistent Keepalive = 2 5".into()),
        ] {
            let mut text = lines.clone();
            text[n] = line;
            let toml = import(&(text.join("\n") + "\n")).unwrap_or_else(|e| panic!("{:?}: {e}", text[n]));
            check(&toml);
        }
    }

    // wg-quick takes its own keys trimmed at both ends only and passes any
    // other line to wg(8), which squeezes out the blanks and refuses the
    // key it does not know ("Line unrecognized"): `Add ress` fails there.
    #[test]
    fn a_wg_quick_key_with_blanks_inside_is_refused_as_wg_quick_refuses_it() {
        let (lines, check) = every_setting();
        let k = lines[1].replace("PrivateKey = ", "");
        for (n, line, name) in [
            (2, "Add ress = 10.40.0.1/24".to_string(), "Address"),
            (4, "M\tTU = 1380".into(), "MTU"),
            (5, "tab le = 1234".into(), "Table"),
            (5, "DN S = 10.0.0.53".into(), "DNS"),
            (5, format!("Post Up = wg set %i private-key <(echo {k})"), "PostUp"),
        ] {
            let mut text = lines.clone();
            text[n] = line;
            let e = import(&(text.join("\n") + "\n")).err().map(|e| e.to_string()).unwrap_or_default();
            let want = format!("wg7.conf:{}: interface setting {name} has blanks inside its name", n + 1);
            assert!(e.contains(&want), "{:?}: {e}", text[n]);
            assert!(!e.contains("10.40.0.1") && !e.contains(&k[..20]), "no value printed: {e}");
        }
        // Blanks around the key and any case are wg-quick's too.
        for (n, line) in [(2, " ADDRESS\t= 10.40.0.1/24, fd00:40::1/64"), (0, " [INTERFACE] ")] {
            let mut text = lines.clone();
            text[n] = line.to_string();
            check(&import(&(text.join("\n") + "\n")).unwrap_or_else(|e| panic!("{line:?}: {e}")));
        }
        // Above any section line wg(8) refuses every setting, its own too;
        // a key's value is not printed.
        for (n, shown) in [(1, "PrivateKey"), (3, "ListenPort"), (2, "Address")] {
            let mut text = lines.clone();
            text.swap(0, n);
            let e = import(&(text.join("\n") + "\n")).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(&format!("wg7.conf:1: setting {shown} is above any [Interface] or [Peer] line")), "{e}");
            assert!(!e.contains(&k[..20]), "no value printed: {e}");
        }
        // wg-quick compares the section line whole: `[ Interface ]` is wg's
        // [Interface] only, so wg-quick passes Address on to wg(8).
        let mut text = lines.clone();
        text[0] = "[ Interface ]".into();
        let e = import(&(text.join("\n") + "\n")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("wg7.conf:3: interface setting Address is not under a line wg-quick reads as [Interface]"),
            "{e}"
        );
    }

    // A name above a [Peer] line, or inside its section before its first
    // setting, names that peer; one that names no peer is reported, not
    // given to the next one.
    #[test]
    fn names_go_to_the_peer_they_sit_in_or_above() {
        let k = b64(key().as_bytes());
        let p: Vec<String> = (0..4).map(|_| b64(key().public_key().as_bytes())).collect();
        let toml = import(&format!(
            "# Name = not-a-peer\n[Interface]\nPrivateKey = {k}\n[Peer]\n# Name = alice\nPublicKey = {}\n\
             [Peer]\n# Name = bob\nPublicKey = {}\n# Name = carol\n[Peer]\nPublicKey = {}\n[Peer]\nPublicKey = {}\n\
             # Name = dangling\n",
            p[0], p[1], p[2], p[3]
        ))
        .unwrap();
        let cfg = causeway_config::parse(&toml, Path::new("wg7.toml")).unwrap();
        let named: Vec<(String, String)> =
            cfg.peers.iter().map(|peer| (peer.name.clone(), peer.public_key.to_base64())).collect();
        let want = [("alice", &p[0]), ("bob", &p[1]), ("carol", &p[2]), ("peer-4", &p[3])];
        assert_eq!(named, want.map(|(n, k)| (n.to_string(), k.clone())));
    }

    // wg and the kernel route 10.2.0.1/16 as 10.2.0.0/16: a file that
    // runs under wg-quick imports, its prefixes cleared of host bits.
    #[test]
    fn allowed_ips_with_host_bits_import_as_wg_routes_them() {
        let (k, p) = (b64(key().as_bytes()), b64(key().public_key().as_bytes()));
        let toml =
            import(&format!("[Interface]\nPrivateKey = {k}\n[Peer]\nPublicKey = {p}\nAllowedIPs = 10.2.0.1/16, 10.3.0.0/16, fd00:2::1/48\n"))
                .unwrap();
        let cfg = causeway_config::parse(&toml, Path::new("wg7.toml")).unwrap();
        let nets: Vec<String> = cfg.peers[0].allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.2.0.0/16", "10.3.0.0/16", "fd00:2::/48"]);
    }

    #[test]
    fn a_name_with_quotes_is_quoted_not_injected() {
        let k = b64(key().as_bytes());
        let p = b64(key().public_key().as_bytes());
        let e = import(&format!("[Interface]\nPrivateKey = {k}\n# Name = x\"y\n[Peer]\nPublicKey = {p}\n"))
            .unwrap_err()
            .to_string();
        // Valid TOML: the name reaches the validator whole, which refuses it.
        assert!(e.contains("wg7.conf:3: # Name: expected a name"), "{e}");
    }

    #[test]
    fn refuses_a_broken_file() {
        let e = import("[Interface]\nPrivateKey = nope\n").unwrap_err().to_string();
        assert!(e.contains("not valid") && e.contains("wg7.conf:2: PrivateKey: "), "{e}");
        let e = import("[Interface]\nListenPort = many\n").unwrap_err().to_string();
        assert!(e.contains("wg7.conf:2: ListenPort: expected a number"), "{e}");
        let e = import("[Peer]\nEndpoint = a:1\nEndpoint = b:1\n").unwrap_err().to_string();
        assert!(e.contains("wg7.conf:3: Endpoint is given twice"), "{e}");
    }

    // wg-quick routes every AllowedIPs prefix unless `Table = off`: in the
    // main table by default (`auto`, `main`), else in the table given.
    #[test]
    fn wg_quicks_routes_carry_over() {
        use causeway_config::RouteTable;
        let (k, p) = (b64(key().as_bytes()), b64(key().public_key().as_bytes()));
        let conf = |table: &str| {
            format!("[Interface]\nPrivateKey = {k}\nAddress = 10.40.0.1/24\n{table}\n[Peer]\nPublicKey = {p}\nAllowedIPs = 10.41.0.0/16\n")
        };
        for (table, want) in [
            ("", Some(RouteTable::MAIN)),
            ("Table = auto", Some(RouteTable::MAIN)),
            ("table = main", Some(RouteTable::MAIN)),
            ("Table = 1234", Some(RouteTable(1234))),
            ("Table = off", None),
        ] {
            let toml = import(&conf(table)).unwrap();
            let cfg = causeway_config::parse(&toml, Path::new("wg7.toml")).unwrap();
            assert_eq!(cfg.interface.routes, want, "{table:?}:\n{}", toml.as_str());
            assert_eq!(toml.contains("install_routes"), want.is_some(), "off is Causeway's default: {}", toml.as_str());
        }
        let e = import(&conf("Table = vpn")).unwrap_err().to_string();
        assert!(e.contains("wg7.conf:4: Table: expected off, auto, main or a table number, got \"vpn\""), "{e}");
        let e = import(&conf("Table = 253")).unwrap_err().to_string();
        assert!(e.contains("wg7.conf:4: Table: expected 254 (main)"), "{e}");
    }

    #[test]
    fn what_was_done_with_routes_is_said() {
        let file = Path::new("/etc/wireguard/wg7.conf");
        let peer = |ip: &str| Peer { allowed_ips: vec![ip.into()], ..Default::default() };
        let note = routes_note(None, (true, None), file, &[peer("10.41.0.0/16")]).unwrap_or_default();
        assert_eq!(note, "/etc/wireguard/wg7.conf: no Table line: wg-quick routes each peer's AllowedIPs through the interface, so install_routes = true: causewayd routes them in the main table");
        let table = ("1234".to_string(), 3);
        let note = routes_note(Some(&table), (true, Some(1234)), file, &[peer("0.0.0.0/0")]).unwrap_or_default();
        assert_eq!(note, "/etc/wireguard/wg7.conf:3: Table = 1234: wg-quick routes each peer's AllowedIPs through the interface, so install_routes = true, route_table = 1234: causewayd routes them in table 1234; not 0.0.0.0/0 or ::/0, which causewayd never routes (they would carry the tunnel's own UDP)");
        let note = routes_note(None, (true, None), file, &[peer("::/0")]).unwrap_or_default();
        assert!(
            note.ends_with(
                "(they would carry the tunnel's own UDP): wg-quick's policy routing for them is not carried over"
            ),
            "{note}"
        );
        assert_eq!(routes_note(Some(&("off".into(), 3)), (false, None), file, &[]), None);
    }

    // What the converted file's check finds is reported at the line, and
    // under the key, of the wg-quick file, not of the TOML made from it (a
    // list's first line: the value in the message tells which item).
    #[test]
    fn a_problem_found_after_conversion_names_the_line_it_came_from() {
        let (k, p) = (b64(key().as_bytes()), b64(key().public_key().as_bytes()));
        let text = format!("[Interface]\nPrivateKey = {k}\n\n[Peer]\nPublicKey = {p}\nAllowedIPs = 10.0.0.0/8\nAllowedIPs = 10.1.300.0/16\n");
        let e = import(&text).unwrap_err().to_string();
        assert!(e.contains("wg7.conf:6: AllowedIPs: ") && e.contains("10.1.300.0/16"), "{e}");
    }
}
