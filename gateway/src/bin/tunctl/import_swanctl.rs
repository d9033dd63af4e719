//! `tunctl import-swanctl`: strongSwan swanctl.conf connections (IKEv2,
//! pre-shared keys) as Causeway `[[peer]]` tables with `protocol =
//! "ipsec"`. As in `import-wg`, the result is built as data, written by
//! the `toml` crate and checked by parsing it with `causeway_config`,
//! which decides what is valid; its complaints are reported against the
//! swanctl.conf settings they came from.
//!
//! Choices (also in `tunctl import-swanctl --help`):
//! - A setting swanctl.conf leaves out gets Causeway's default, not
//!   strongSwan's (strongSwan's `default` proposals likewise): absent IKE
//!   `rekey_time` is 28800 s, not 4 h (nor off, as strongSwan has it when
//!   `reauth_time` is set: a note says so); absent `dpd_delay` is 30 s, not off.
//! - `start_action = start` is `initiate = true`; `trap` and `none` are
//!   `initiate = false`: Causeway then starts IKE when traffic needs the
//!   tunnel (strongSwan's trap), and otherwise waits for the peer.
//! - `remote_ts` is also the peer's `allowed_ips` (route-based, as on an SRX).
//! - An unset `local.id`/`remote.id` (`%any`) becomes the one address of
//!   `local_addrs`/`remote_addrs`, the identity strongSwan and SRXs send
//!   by default; without one it is an error.
//! - The pre-shared key goes to `<psk-dir>/<connection>.psk` as `0x` and
//!   hex (mode 0600, created new: an existing file is never replaced), and
//!   is never printed. A connection no secret names is an error naming
//!   that file, unless the operator has already made it (then it is used):
//!   a peer whose key file is missing would not load.
//! - A key strongSwan does not know is an error (with the nearest real
//!   one: a typo would otherwise drop a setting silently); a key swanctl
//!   has and Causeway does not use is listed on stderr.
//!
//! Invariant: PSK files are written only once everything else is known to
//! be valid, and removed again if the final check fails.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use serde::Serialize;
use zeroize::Zeroizing;

use super::swanctl::{self, Section};
use super::swanctl_connection::{connection, Conn, Peer};
use super::swanctl_secrets::{ike_secrets, write_psk, IkeSecret, MIN_PSK_LEN};
use super::swanctl_values as values;

#[derive(Serialize)]
struct File {
    #[serde(rename = "peer")]
    peers: Vec<Peer>,
}

/// The result: TOML for stdout, lines for stderr, the PSK files written.
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
    pub written: Vec<PathBuf>,
}

/// Converts the connections of `file` (or the one named), writing their
/// PSK files into `psk_dir`.
pub fn import_swanctl(file: &Path, only: Option<&str>, psk_dir: &Path) -> anyhow::Result<Imported> {
    let top = swanctl::parse(file)?;
    let mut notes = Vec::new();
    let other: Vec<String> = top
        .sections
        .iter()
        .map(|s| s.name.clone())
        .chain(top.settings.iter().map(|s| s.key.clone()))
        .filter(|n| n != "connections" && n != "secrets")
        .collect();
    if !other.is_empty() {
        notes.push(format!("{}: not imported: {}", file.display(), other.join(", ")));
    }
    let Some(conns) = top.section("connections").filter(|c| !c.sections.is_empty()) else {
        bail!("{}: no connections {{ }} to import", file.display());
    };
    let selected: Vec<&Section> = match only {
        None => conns.sections.iter().collect(),
        Some(name) => match conns.section(name) {
            Some(c) => vec![c],
            None => {
                let names: Vec<&str> = conns.sections.iter().map(|c| c.name.as_str()).collect();
                bail!("{}: no connection named {name}; it has {}", file.display(), names.join(", "));
            }
        },
    };
    let psk_dir = psk_dir.canonicalize().with_context(|| {
        format!("--psk-dir {}: cannot use it (create it first: mkdir -m 700 {0})", psk_dir.display())
    })?;
    let secrets = ike_secrets(top.section("secrets"), &mut notes);

    let mut errors = Vec::new();
    let mut mapped = Vec::new();
    for conn in selected {
        let (c, result) = connection(conn, &secrets, &psk_dir);
        errors.extend(c.errors.iter().cloned());
        if let Some((peer, secret)) = result {
            mapped.push((c, peer, secret));
        }
    }
    // A route-based connection (remote_ts 0.0.0.0/0 or ::/0, as toward an
    // SRX's st0) says nothing of what is routed to it. One alone may take
    // everything; several would each claim all of it, which no
    // configuration allows, so none is given it and the operator is told
    // what to write instead.
    for all in ["0.0.0.0/0", "::/0"] {
        let claim = |p: &Peer| p.allowed_ips.iter().any(|n| n == all);
        let claimants: Vec<String> = mapped.iter().filter(|m| claim(&m.1)).map(|m| m.0.name.to_string()).collect();
        if claimants.len() < 2 {
            continue;
        }
        for (_, peer, _) in mapped.iter_mut().filter(|m| claim(&m.1)) {
            peer.allowed_ips.retain(|n| n != all);
        }
        notes.push(format!(
            "connections {}: each has remote_ts {all} (route-based), which only one peer can be routed: it is \
             left out of their allowed_ips; give each the prefixes its site routes into the tunnel (an SRX's \
             static routes into st0)",
            claimants.join(", ")
        ));
    }
    // The keys, decoded and checked before anything is written.
    let mut keys = Vec::new();
    for (c, peer, secret) in &mapped {
        let Some(s) = secret else { continue };
        let path = format!("secrets.{}.secret", s.name);
        match values::secret_bytes(&s.secret.value) {
            Ok(k) if k.len() < MIN_PSK_LEN => errors.push(format!(
                "{}: connection {}: {path}: the key has {} bytes; Causeway takes at least {MIN_PSK_LEN} (a shorter \
                 one can be guessed offline from one captured IKE_AUTH): make a new one for both ends",
                s.secret.at,
                c.name,
                k.len()
            )),
            Ok(k) => keys.push((PathBuf::from(&peer.psk_file), k)),
            Err(e) => errors.push(format!("{}: connection {}: {path}: {e}", s.secret.at, c.name)),
        }
    }
    for (path, _) in &keys {
        if path.symlink_metadata().is_ok() {
            errors.push(format!(
                "{} exists; tunctl never replaces a key file: move it away or pick another --psk-dir",
                path.display()
            ));
        }
    }
    if !errors.is_empty() {
        bail!("cannot import {}:\n{}", file.display(), errors.join("\n"));
    }

    let peers: Vec<Peer> = mapped.iter().map(|m| m.1.clone()).collect();
    let body = toml::to_string(&File { peers }).context("cannot write the TOML")?;
    let origin: String = file.display().to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let toml = format!(
        "# Imported from {origin} by tunctl import-swanctl: add these [[peer]] tables to the gateway's configuration.\n{body}"
    );

    let mut written = Vec::new();
    for (path, key) in &keys {
        if let Err(e) = write_psk(path, key) {
            remove(&written);
            bail!("cannot write {}: {e}", path.display());
        }
        written.push(path.clone());
    }
    // A connection whose key is nowhere fails the import, after the rest
    // was checked, so that one run reports every problem.
    let mut problems = check(&toml, &psk_dir, &mapped).err().unwrap_or_default();
    problems.extend(mapped.iter().filter_map(|(c, _, _)| c.missing_key.clone()));
    if !problems.is_empty() {
        remove(&written);
        bail!("cannot import {}:\n{}", file.display(), problems.join("\n"));
    }

    for (c, _, _) in &mapped {
        let at = |line: String| format!("connection {}: {line}", c.name);
        notes.extend(c.notes.iter().cloned().map(at));
        if !c.skipped.is_empty() {
            notes.push(at(format!(
                "not imported (Causeway has no such setting, or decides it itself): {}",
                c.skipped.join(", ")
            )));
        }
    }
    Ok(Imported { toml, notes, written })
}

fn remove(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

/// Validates the peers with causeway_config behind a throwaway interface,
/// each problem told against the swanctl setting it came from. A key file
/// that is missing because no secret names its connection is told apart
/// (`missing_key`); one the operator made for it is checked as any other.
fn check(toml: &str, psk_dir: &Path, mapped: &[(Conn, Peer, Option<&IkeSecret>)]) -> Result<(), Vec<String>> {
    let key = causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng);
    let key = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.as_bytes()));
    let text = Zeroizing::new(format!("[interface]\nprivate_key = \"{}\"\n\n{toml}", key.as_str()));
    let Err(e) = causeway_config::parse(&text, &psk_dir.join("imported.toml")) else { return Ok(()) };
    let mut out = Vec::new();
    for p in e.problems() {
        let (index, field) = p
            .field
            .strip_prefix("peer[")
            .and_then(|r| r.split_once(']'))
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?.checked_sub(1)?, rest.trim_start_matches('.'))))
            .unwrap_or((usize::MAX, p.field.as_str()));
        let Some((c, _, _)) = mapped.get(index) else {
            out.push(p.to_string());
            continue;
        };
        if field == "psk_file" && c.missing_key.is_some() {
            continue;
        }
        match c.origins.iter().find(|o| o.0 == field) {
            Some((_, path, at)) => out.push(format!("{at}: connection {}: {path}: {}", c.name, p.message)),
            None => out.push(format!("connection {}: {field}: {}", c.name, p.message)),
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_config::{Encap, Identity, IpsecPeer};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const EAST_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// A swanctl.conf as a strongSwan 5.9 gateway in two data centres has it.
    const TWO_DCS: &str = r#"# gw1.primary.example: tunnels to both other data centres
connections {
    dc-east {
        version = 2
        local_addrs = 198.18.0.1
        remote_addrs = 198.18.1.2
        proposals = aes256gcm16-sha384-x25519, aes256-sha256-modp2048
        encap = yes
        dpd_delay = 10s
        rekey_time = 4h
        mobike = no
        local {
            auth = psk
            id = gw1.primary.example
        }
        remote {
            auth = psk
            id = 198.18.1.2
        }
        children {
            east-net {
                local_ts = 10.0.0.0/16, fd00:10::/48
                remote_ts = 10.1.0.0/16,fd00:11::/48
                esp_proposals = aes256gcm16-noesn, aes256-sha256-modp2048
                rekey_time = 60m
                life_time = 66m
                start_action = start
                dpd_action = restart
                updown = /usr/lib/ipsec/_updown iptables
            }
        }
    }
    dc-west {
        remote_addrs = srx.dc-west.example
        remote_port = 4500
        local {
            auth = psk
            id = @gw1.primary.example
        }
        remote {
            auth = psk
            id = "srx@dc-west.example"   # the SRX's user@fqdn identity
        }
        children {
            west {
                local_ts = 10.0.0.0/16
                remote_ts = 10.2.0.0/16
                rekey_time = 28800s
                start_action = trap
            }
        }
    }
}

secrets {
    ike-east {
        id-1 = gw1.primary.example
        id-2 = 198.18.1.2
        secret = 0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
    }
    ike-west {
        id = srx@dc-west.example
        secret = "a long shared passphrase, with # and spaces"
    }
    eap-carol {
        id = carol
        secret = "not an IKE key"
    }
}
"#;

    struct Setup {
        dir: tempfile::TempDir,
        conf: PathBuf,
        psk_dir: PathBuf,
    }

    fn setup(conf: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let psk_dir = dir.path().join("keys");
        std::fs::create_dir(&psk_dir).unwrap();
        let path = dir.path().join("swanctl.conf");
        std::fs::write(&path, conf).unwrap();
        Setup { dir, conf: path, psk_dir }
    }

    impl Setup {
        fn import(&self, only: Option<&str>) -> anyhow::Result<Imported> {
            import_swanctl(&self.conf, only, &self.psk_dir)
        }

        /// The imported peers in a gateway configuration, as causewayd reads it.
        fn load(&self, imported: &Imported) -> Vec<IpsecPeer> {
            let text = format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{}", imported.toml);
            let path = self.dir.path().join("gw.toml");
            causeway_config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}\n{text}")).ipsec_peers
        }

        fn key_file(&self, name: &str) -> PathBuf {
            self.psk_dir.canonicalize().unwrap().join(format!("{name}.psk"))
        }
    }

    fn strings<T: ToString>(v: &[T]) -> Vec<String> {
        v.iter().map(|p| p.to_string()).collect()
    }

    fn error(conf: &str) -> String {
        let s = setup(conf);
        let e = format!("{:#}", s.import(None).err().expect("refused"));
        assert_eq!(std::fs::read_dir(&s.psk_dir).unwrap().count(), 0, "nothing written: {e}");
        e
    }

    // Two SRX-style route-based connections: each remote_ts is 0.0.0.0/0,
    // which both peers cannot be routed. Imported without it, with a note;
    // one such connection alone keeps it.
    #[test]
    fn route_based_connections_leave_the_default_prefix_to_the_operator() {
        let both = TWO_DCS.replace("remote_ts = 10.1.0.0/16,fd00:11::/48", "remote_ts = 0.0.0.0/0").replace(
            "local_ts = 10.0.0.0/16\n                remote_ts = 10.2.0.0/16",
            "local_ts = 0.0.0.0/0\n                remote_ts = 0.0.0.0/0",
        );
        assert_eq!(both.matches("remote_ts = 0.0.0.0/0").count(), 2);
        let s = setup(&both);
        let imported = s.import(None).unwrap();
        let peers = s.load(&imported);
        assert!(peers.iter().all(|p| p.allowed_ips.is_empty()), "{:?}", peers.iter().map(|p| &p.allowed_ips));
        assert_eq!(strings(&peers[0].remote_ts), ["0.0.0.0/0"], "the selectors stay");
        let notes = imported.notes.join("\n");
        assert!(notes.contains("connections dc-east, dc-west: each has remote_ts 0.0.0.0/0"), "{notes}");
        assert!(notes.contains("it is left out of their allowed_ips; give each"), "{notes}");

        let s = setup(&both);
        let one = s.import(Some("dc-west")).unwrap();
        assert_eq!(strings(&s.load(&one)[0].allowed_ips), ["0.0.0.0/0"]);
        assert!(!one.notes.join("\n").contains("route-based"), "{:?}", one.notes);
    }

    #[test]
    fn imports_two_connections_and_their_secrets() {
        let s = setup(TWO_DCS);
        let imported = s.import(None).unwrap();
        assert!(imported.toml.starts_with("# Imported from "), "{}", imported.toml);
        assert!(!imported.toml.contains(EAST_KEY) && !imported.toml.contains("passphrase"), "no key in the output");
        let peers = s.load(&imported);
        assert_eq!(peers.len(), 2);

        let east = &peers[0];
        assert_eq!(east.name, "dc-east");
        assert_eq!(strings(&east.endpoints), ["198.18.1.2:500"]);
        assert_eq!(east.local_id, Identity::Fqdn("gw1.primary.example".into()));
        assert_eq!(east.remote_id, Identity::Address("198.18.1.2".parse().unwrap()));
        assert_eq!(strings(&east.ike_proposals), ["aes256gcm16-prfsha384-x25519", "aes256-sha256-prfsha256-modp2048"]);
        assert_eq!(strings(&east.esp_proposals), ["aes256gcm16", "aes256-sha256-modp2048"]);
        assert_eq!(strings(&east.local_ts), ["10.0.0.0/16", "fd00:10::/48"]);
        assert_eq!(strings(&east.remote_ts), ["10.1.0.0/16", "fd00:11::/48"]);
        assert_eq!(strings(&east.allowed_ips), strings(&east.remote_ts), "remote_ts is routed to the peer");
        assert_eq!(east.ike_lifetime, Duration::from_secs(4 * 3600));
        assert_eq!(east.child_lifetime, Duration::from_secs(3600));
        assert_eq!(east.dpd_interval, Duration::from_secs(10));
        assert_eq!(east.encap, Encap::Always);
        assert!(east.initiate, "start_action = start");
        assert_eq!(&**east.psk.0, (0..32).map(|i| (i % 16) * 0x11).collect::<Vec<u8>>().as_slice());

        let west = &peers[1];
        assert_eq!(west.name, "dc-west");
        assert_eq!(strings(&west.endpoints), ["srx.dc-west.example:4500"]);
        assert_eq!(west.local_id, Identity::Fqdn("gw1.primary.example".into()));
        assert_eq!(west.remote_id, Identity::Email("srx@dc-west.example".into()));
        assert_eq!(strings(&west.ike_proposals), strings(&causeway_config::proposals::default_ike_proposals()));
        assert_eq!(strings(&west.esp_proposals), strings(&causeway_config::proposals::default_esp_proposals()));
        assert_eq!(strings(&west.allowed_ips), ["10.2.0.0/16"]);
        assert_eq!(west.ike_lifetime, causeway_config::DEFAULT_IKE_LIFETIME, "absent: Causeway's default");
        assert_eq!(west.child_lifetime, Duration::from_secs(28_800));
        assert_eq!(west.dpd_interval, causeway_config::DEFAULT_DPD_INTERVAL);
        assert_eq!(west.encap, Encap::Auto);
        assert!(!west.initiate, "start_action = trap: IKE starts on traffic");
        assert_eq!(&**west.psk.0, b"a long shared passphrase, with # and spaces");

        assert_eq!(imported.written, [s.key_file("dc-east"), s.key_file("dc-west")]);
        let notes = imported.notes.join("\n");
        assert!(notes.contains("connection dc-east: not imported (") && notes.contains("mobike"), "{notes}");
        assert!(notes.contains("children.east-net.dpd_action, children.east-net.updown"), "{notes}");
        assert!(notes.contains("children.east-net.life_time"), "{notes}");
        assert!(!notes.contains("dc-west: not imported"), "{notes}");
    }

    #[test]
    fn key_files_are_private_and_hold_the_key() {
        let s = setup(TWO_DCS);
        s.import(Some("dc-east")).unwrap();
        let file = s.key_file("dc-east");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("0x{EAST_KEY}\n"));
        assert!(!s.key_file("dc-west").exists(), "only the connection asked for");
    }

    #[test]
    fn an_existing_key_file_is_never_replaced() {
        let s = setup(TWO_DCS);
        std::fs::write(s.key_file("dc-west"), "the operator's own key file\n").unwrap();
        let e = format!("{:#}", s.import(None).err().unwrap());
        assert!(e.contains("dc-west.psk exists; tunctl never replaces a key file"), "{e}");
        assert_eq!(std::fs::read_to_string(s.key_file("dc-west")).unwrap(), "the operator's own key file\n");
        assert!(!s.key_file("dc-east").exists(), "nothing written when one file is in the way");
    }

    #[test]
    fn a_certificate_connection_is_refused_by_name_and_setting() {
        let e = error(
            "connections {\n  hq {\n    remote_addrs = 198.18.1.2\n    local {\n      auth = pubkey\n      certs = gw1.pem\n      \
             id = gw1.primary.example\n    }\n    remote {\n      id = hq.example\n    }\n    children { net { remote_ts = 10.1.0.0/16 } }\n  }\n}\n",
        );
        assert!(
            e.contains(
                "swanctl.conf:5: connection hq: local.auth: pubkey: Causeway authenticates with pre-shared keys only"
            ),
            "{e}"
        );
        assert!(e.contains("swanctl.conf:6: connection hq: local.certs: certificates"), "{e}");
        assert!(e.contains("swanctl.conf:9: connection hq: remote.auth: not set, so strongSwan uses pubkey"), "{e}");
    }

    #[test]
    fn what_cannot_be_carried_over_is_an_error() {
        let conn = |body: &str| {
            format!(
                "connections {{ c1 {{\n remote_addrs = 198.18.1.2\n local_addrs = 198.18.0.1\n local {{ auth = psk\n id = a.example }}\n \
                 remote {{ auth = psk\n id = b.example }}\n{body}\n}} }}\n"
            )
        };
        for (body, want) in [
            ("children { a { remote_ts = 10.1.0.0/16 }\n b { remote_ts = 10.2.0.0/16 } }", "children.b: its traffic selectors"),
            ("children { a { remote_ts = 10.1.0.0/16\n esp_proposals = aes128gcm16 }\n b { remote_ts = 10.1.0.0/16 } }", "children.b: its esp_proposals differ"),
            ("proposals = aes256-sha1-modp1024\nchildren { a { remote_ts = 10.1.0.0/16 } }", "connection c1: proposals: unknown algorithm"),
            ("children { a { remote_ts = 10.1.0.0/16\n esp_proposals = 3des-md5 } }", "children.a.esp_proposals: unknown algorithm \"3des\""),
            ("version = 1\nchildren { a { remote_ts = 10.1.0.0/16 } }", "version: 1: Causeway speaks IKEv2 only"),
            ("children { a { remote_ts = 10.1.0.0/16[tcp/https] } }", "children.a.remote_ts: \"10.1.0.0/16[tcp/https]\": \"https\" is not a port"),
            ("children { a { remote_ts = 10.1.0.0/16\n mode = transport } }", "children.a.mode: transport"),
            ("pools = office\nchildren { a { remote_ts = 10.1.0.0/16 } }", "pools: virtual IPs"),
            ("", "children: no children { } section"),
            ("rekey_time = 0\nchildren { a { remote_ts = 10.1.0.0/16 } }", "rekey_time: 0 turns rekeying off"),
            // Out of Causeway's range: its validator's message, told against the swanctl setting.
            ("children { a { remote_ts = 10.1.0.0/16\n rekey_time = 2d } }", "connection c1: children.a.rekey_time: expected 30 to 86400 seconds, got 172800"),
            ("dpd_delay = 2h\nchildren { a { remote_ts = 10.1.0.0/16 } }", "connection c1: dpd_delay: expected 0 to 3600 seconds"),
        ] {
            let e = error(&conn(body));
            assert!(e.contains(want), "{body}:\n{e}");
        }
        let e = error("connections { c1 { local { auth = psk } remote { auth = psk } children { a { remote_ts = 10.1.0.0/16 } } } }\n");
        assert!(e.contains("local.id: no identity (strongSwan's %any)") && e.contains("remote.id: no identity"), "{e}");
        let e = error("connections { \"x\" { } }\n");
        assert!(e.contains("a quoted string where a name was expected"), "{e}");
        let e = error("connections { c1 {\n remote_addrs = 198.18.0.0/24\n local { auth = psk\n id = a }\n remote { auth = psk\n id = b }\n children { a { remote_ts = 10.1.0.0/16 } } } }\n");
        assert!(e.contains("swanctl.conf:2: connection c1: remote_addrs: 198.18.0.0/24 is a subnet"), "{e}");
    }

    #[test]
    fn selectors_narrowed_to_protocols_and_ports_are_kept_and_route_their_prefixes() {
        let s = setup(
            "connections {\n peer {\n  remote_addrs = 198.18.0.2\n  local { auth = psk\n id = a }\n  \
             remote { auth = psk\n id = b }\n  children {\n   a {\n    local_ts = 10.1.0.0/16[tcp]\n    \
             remote_ts = 10.2.0.0/16[tcp/443], 10.2.0.0/16[udp/53], 10.3.0.0/16[icmp/8] } } } }\n\
             secrets { ike { secret = 0sAAECAwQFBgcICQoLDA0ODw== } }\n",
        );
        let imported = s.import(None).unwrap();
        let p = &s.load(&imported)[0];
        assert_eq!(strings(&p.local_ts), ["10.1.0.0/16[tcp]"]);
        assert_eq!(strings(&p.remote_ts), ["10.2.0.0/16[tcp/443]", "10.2.0.0/16[udp/53]", "10.3.0.0/16[icmp/2048]"]);
        assert_eq!(strings(&p.allowed_ips), ["10.2.0.0/16", "10.3.0.0/16"], "each prefix routed once");
    }

    // Written bracketed: unbracketed, an IPv6 address whose last group
    // reads as an IKE port is refused as ambiguous.
    #[test]
    fn an_ipv6_peer_on_port_500_is_written_in_brackets() {
        let s = setup(
            "connections {\n peer {\n  remote_addrs = 2001:db8::4500\n  local { auth = psk\n id = a }\n  \
             remote { auth = psk\n id = b }\n  children {\n   a {\n    local_ts = fd00:1::/64\n    remote_ts = fd00:2::/64\n } } } }\n\
             secrets { ike { secret = 0sAAECAwQFBgcICQoLDA0ODw== } }\n",
        );
        let imported = s.import(None).unwrap();
        let p = &s.load(&imported)[0];
        assert_eq!(strings(&p.endpoints), ["[2001:db8::4500]:500"]);
    }

    #[test]
    fn unset_identities_and_dynamic_selectors_take_the_addresses() {
        let s = setup(
            "connections {\n peer {\n  local_addrs = fd00::1\n  remote_addrs = fd00::2, %any\n  remote_port = 4500\n  \
             local { auth = psk }\n  remote { auth = psk\n id = %any }\n  children {\n   a { life_time = 1000s\n    \
             remote_ts = fd00:2::/64 }\n   b { life_time = 1000\n remote_ts = fd00:2::/64 } } } }\n\
             secrets { ike { secret = 0sAAECAwQFBgcICQoLDA0ODw== } }\n",
        );
        let imported = s.import(None).unwrap();
        let p = &s.load(&imported)[0];
        assert_eq!(p.local_id, Identity::Address("fd00::1".parse().unwrap()));
        assert_eq!(p.remote_id, Identity::Address("fd00::2".parse().unwrap()));
        assert_eq!(strings(&p.endpoints), ["[fd00::2]:4500"]);
        assert_eq!(
            (strings(&p.local_ts), strings(&p.remote_ts)),
            (vec!["fd00::1/128".into()], vec!["fd00:2::/64".into()])
        );
        assert_eq!(p.child_lifetime, Duration::from_secs(909), "life_time / 1.1, as strongSwan 5.9.9+ rekeys");
        assert!(!p.initiate, "start_action none");
        assert_eq!(&**p.psk.0, (0..16).collect::<Vec<u8>>().as_slice(), "a secret naming no identity fits any");
        let notes = imported.notes.join("\n");
        assert!(notes.contains("local.id is not set: using fd00::1 from local_addrs"), "{notes}");
        assert!(notes.contains("children a and b are alike: imported once"), "{notes}");
        assert!(notes.contains("children.a.life_time = 1000 s without rekey_time: child_lifetime = 909"), "{notes}");
        assert!(notes.contains("does not name the remote identity"), "{notes}");
        assert!(notes.contains("remote_addrs ends in %any") && notes.contains("only from [fd00::2]:4500"), "{notes}");
    }

    // strongSwan's default remote_ts, dynamic, is the peer's own address:
    // routed into the tunnel, IKE and ESP to the peer would go there too.
    #[test]
    fn a_remote_ts_of_the_peers_own_address_is_refused() {
        let conf = |ts: &str| {
            format!(
                "connections {{\n peer {{\n  local_addrs = 198.18.1.1\n  remote_addrs = 198.18.1.2\n  \
                 local {{ auth = psk }}\n  remote {{ auth = psk }}\n  children {{\n   a {{\n{ts}   }} }} }} }}\n\
                 secrets {{ ike {{ secret = 0sAAECAwQFBgcICQoLDA0ODw== }} }}\n"
            )
        };
        for (ts, said) in [
            ("", "(strongSwan's default, dynamic)"),
            ("   remote_ts = dynamic\n", "(dynamic)"),
            ("   remote_ts = 198.18.1.2/32\n", ""),
        ] {
            let err = setup(&conf(ts)).import(None).err().expect("refused").to_string();
            let want = format!("children.a.remote_ts: 198.18.1.2/32 {said}");
            assert!(err.contains(want.trim_end()), "{ts:?}: {err}");
            assert!(err.contains("set remote_ts to the networks behind the peer"), "{err}");
        }
        // A wider prefix holding it is imported, with a note: a route to
        // the WAN's own subnet may take the peer's address first.
        let imported = setup(&conf("   remote_ts = 198.18.1.0/24\n")).import(None).unwrap();
        let notes = imported.notes.join("\n");
        assert!(notes.contains("198.18.1.0/24 holds the peer's address 198.18.1.2"), "{notes}");
    }

    // A peer whose key file does not exist would not load: the import
    // fails, naming the connection and the file, and writes nothing; once
    // the operator has made the file, the import uses it.
    #[test]
    fn a_missing_secret_fails_the_import_and_says_which_file_to_create() {
        // No secret names dc-west's identities (ike-east would fit its
        // local one, and strongSwan would take it: it names only the remote).
        let conf = TWO_DCS
            .replace("id = srx@dc-west.example", "id = other@dc-west.example")
            .replace("id-1 = gw1.primary.example", "");
        let s = setup(&conf);
        let e = format!("{:#}", s.import(None).err().expect("refused"));
        let file = s.key_file("dc-west");
        let want = format!(
            "swanctl.conf:33: connection dc-west: no secret in secrets {{ ike... }} names its identities \
             (gw1.primary.example and srx@dc-west.example): create {} (mode 0600)",
            file.display()
        );
        assert!(e.contains(&want), "{e}");
        assert_eq!(std::fs::read_dir(&s.psk_dir).unwrap().count(), 0, "nothing left written: {e}");

        write_psk(&file, b"0123456789abcdef0123").unwrap();
        let imported = s.import(None).unwrap();
        assert_eq!(imported.written, [s.key_file("dc-east")], "the operator's file is used, not written");
        let notes = imported.notes.join("\n");
        assert!(notes.contains(&format!("connection dc-west: no secret in secrets {{ ike... }} names its identities (gw1.primary.example and srx@dc-west.example): using {}", file.display())), "{notes}");
        assert_eq!(&**s.load(&imported)[1].psk.0, b"0123456789abcdef0123");
    }

    // The operator's file is checked as causewayd would check it.
    #[test]
    fn a_key_file_made_by_the_operator_must_be_private() {
        let conf = TWO_DCS
            .replace("id = srx@dc-west.example", "id = other@dc-west.example")
            .replace("id-1 = gw1.primary.example", "");
        let s = setup(&conf);
        let file = s.key_file("dc-west");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", s.import(None).err().expect("refused"));
        assert!(e.contains("connection dc-west: psk_file: "), "{e}");
        assert!(!s.key_file("dc-east").exists(), "nothing written when the check fails");
    }

    /// The strongSwan side of README's IPsec example, as the README has it.
    fn readme_example() -> String {
        let readme = include_str!("../../../../README.md");
        let at = readme.find("With strongSwan 5.9 (swanctl.conf;").expect("the README's swanctl.conf example");
        let block = readme[at..].split("```\n").nth(1).expect("a fenced block");
        block.replace("<the PSK>", "a long shared passphrase for both ends")
    }

    #[test]
    fn the_readme_example_imports() {
        let s = setup(&readme_example());
        let imported = s.import(None).unwrap();
        let p = &s.load(&imported)[0];
        assert_eq!((p.name.as_str(), strings(&p.endpoints)), ("primary", vec!["198.18.0.1:500".to_string()]));
        assert_eq!(p.local_id, Identity::Fqdn("gw1.dc-east.example".into()));
        assert_eq!(p.remote_id, Identity::Fqdn("gw1.primary.example".into()));
        assert_eq!(
            (strings(&p.local_ts), strings(&p.remote_ts)),
            (vec!["10.1.0.0/16".into()], vec!["10.0.0.0/16".into()])
        );
        assert_eq!(&**p.psk.0, b"a long shared passphrase for both ends");
        assert!(p.initiate);
        let notes = imported.notes.join("\n");
        assert!(notes.contains("connection primary: local_addrs = 198.18.1.2 is not imported"), "{notes}");
        assert_eq!(notes.matches("local_addrs").count(), 1, "{notes}");
    }

    // strongSwan has no `;` between settings: the one-line form the README
    // once showed is refused at its line, not misread as `auth = "psk; ..."`.
    #[test]
    fn settings_joined_by_semicolons_are_refused_at_their_line() {
        let one_line = readme_example()
            .replace(
                "local {\n            auth = psk\n            id = gw1.dc-east.example\n        }",
                "local { auth = psk; id = gw1.dc-east.example }",
            )
            .replace(
                "ike-primary {\n        id = gw1.primary.example\n        secret = \"a long shared passphrase for both ends\"\n    }",
                "ike-primary { id = gw1.primary.example; secret = \"a long shared passphrase for both ends\" }",
            );
        assert!(one_line.contains("auth = psk; id") && one_line.contains("example; secret"), "{one_line}");
        let e = error(&one_line);
        assert!(
            e.contains("swanctl.conf:7: auth: strongSwan takes one setting per line; ';' does not separate settings"),
            "{e}"
        );
        let secrets_only = one_line.replace("local { auth = psk; id = gw1.dc-east.example }", "local {\nauth = psk\n}");
        let e = error(&secrets_only);
        assert!(e.contains(": id: strongSwan takes one setting per line"), "{e}");
        assert!(!e.contains("passphrase"), "the secret is not shown: {e}");
    }

    /// One connection: `conn` is line 3, `child` line 16.
    fn one_conn(conn: &str, child: &str) -> String {
        format!(
            "connections {{\n c1 {{\n{conn}\n  local {{\n   auth = psk\n   id = a.example\n  }}\n  remote {{\n   auth = psk\n   \
             id = b.example\n  }}\n  children {{\n   a {{\n    remote_ts = 10.1.0.0/16\n    local_ts = 10.0.0.0/16\n{child}\n   }}\n  }}\n }}\n}}\n\
             secrets {{ ike {{ secret = 0sAAECAwQFBgcICQoLDA0ODw== }} }}\n"
        )
    }

    // strongSwan's vici plugin reads these numbers with strtoul(..., 0):
    // written with a leading 0 they are octal there, and so here.
    #[test]
    fn numbers_with_a_leading_zero_are_octal_as_in_strongswan() {
        let conn = "remote_addrs = 198.18.1.2\nremote_port = 010624\nversion = 02\nrekey_time = 010h\ndpd_delay = 0x1e";
        let s = setup(&one_conn(conn, "rekey_time = 01750"));
        let p = &s.load(&s.import(None).unwrap())[0];
        assert_eq!(strings(&p.endpoints), ["198.18.1.2:4500"]);
        assert_eq!(p.ike_lifetime, Duration::from_secs(8 * 3_600));
        assert_eq!(p.dpd_interval, Duration::from_secs(30));
        assert_eq!(p.child_lifetime, Duration::from_secs(1_000));
        for (conn, child, want) in [
            ("rekey_time = 09h", "", "swanctl.conf:3: connection c1: rekey_time: \"09h\": strongSwan reads a number with a leading 0 as octal"),
            ("", "life_time = 0980", "swanctl.conf:16: connection c1: children.a.life_time: \"0980\": strongSwan reads"),
            ("remote_addrs = 198.18.1.2\nremote_port = 04598", "", "swanctl.conf:4: connection c1: remote_port: \"04598\": strongSwan reads"),
            ("version = 08", "", "swanctl.conf:3: connection c1: version: \"08\": strongSwan reads"),
            ("version = 01", "", "swanctl.conf:3: connection c1: version: 01: Causeway speaks IKEv2 only"),
        ] {
            let e = error(&one_conn(conn, child));
            assert!(e.contains(want), "{conn:?} {child:?}:\n{e}");
        }
    }

    // strongSwan refuses a key it does not know; so does the import, since a
    // typo would otherwise drop the setting (a peer without endpoints, or
    // with default proposals).
    #[test]
    fn a_key_strongswan_does_not_know_is_an_error_naming_the_nearest() {
        for (conn, child, want) in [
            ("remote_addr = 198.18.1.2", "", "swanctl.conf:3: connection c1: remote_addr: not a swanctl setting; did you mean remote_addrs?"),
            ("", "esp_proposal = aes256gcm16", "swanctl.conf:16: connection c1: children.a.esp_proposal: not a swanctl setting; did you mean esp_proposals?"),
            ("dpd_dealy = 30s", "", "swanctl.conf:3: connection c1: dpd_dealy: not a swanctl setting; did you mean dpd_delay?"),
            ("Proposals = aes256gcm16-prfsha256-x25519", "", "Proposals: not a swanctl setting; did you mean proposals?"),
            ("frobnicate = yes", "", "swanctl.conf:3: connection c1: frobnicate: not a swanctl setting (strongSwan refuses it too)"),
            ("esp_proposals = aes256gcm16", "", "swanctl.conf:3: connection c1: esp_proposals: not a setting of this level; strongSwan takes it in a child"),
            ("", "remote_addrs = 198.18.1.2", "children.a.remote_addrs: not a setting of this level; strongSwan takes it in the connection"),
            ("child { }", "", "swanctl.conf:3: connection c1: child { }: not a swanctl section; did you mean children?"),
            ("", "net { }", "swanctl.conf:16: connection c1: children.a.net { }: not a swanctl section"),
        ] {
            let e = error(&one_conn(conn, child));
            assert!(e.contains(want), "{conn:?} {child:?}:\n{e}");
        }
        let e = error(&one_conn("", "").replace("   id = a.example", "   ids = a.example"));
        assert!(e.contains("swanctl.conf:6: connection c1: local.ids: not a swanctl setting; did you mean id?"), "{e}");
        let e = error(&one_conn("", "").replace("  children {\n   a {", "  children {\n   mode = tunnel\n   a {"));
        assert!(e.contains("swanctl.conf:13: connection c1: children.mode: not a swanctl setting"), "{e}");
    }

    // Keys swanctl has and Causeway does not use are listed, not refused.
    #[test]
    fn real_swanctl_keys_causeway_does_not_use_are_listed() {
        let conn = "mobike = no\nfragmentation = yes\nsend_certreq = no\nunique = replace\nkeyingtries = 0\n\
                    over_time = 1h\nrand_time = 5m\nif_id_in = 42\nreauth_time = 0\nlocal_port = 500";
        let child = "updown = /usr/lib/ipsec/_updown iptables\nhostaccess = yes\nmark_in = 42\nstart_action = start\n\
                     close_action = start\ndpd_action = restart\nreplay_window = 64\nhw_offload = auto\ncopy_df = no\n\
                     policies = yes\nset_mark_in = 7\nlabel = system_u:object_r:ipsec_spd_t:s0\nif_id_in = 42\n\
                     rekey_bytes = 0\ninactivity = 0s";
        let s = setup(&one_conn(conn, child));
        let imported = s.import(None).unwrap();
        let notes = imported.notes.join("\n");
        // No remote_addrs: nothing to start toward, so the peer only answers.
        assert!(notes.contains("start_action = start without remote_addrs"), "{notes}");
        assert!(!s.load(&imported)[0].initiate);
        let line = notes.lines().find(|l| l.contains("not imported (")).unwrap_or_default();
        for key in conn.lines().chain(child.lines()).filter_map(|l| l.split_once(" =")).map(|(k, _)| k) {
            let listed = line.contains(&format!(": {key}"))
                || line.contains(&format!(", {key}"))
                || line.contains(&format!(".{key}"));
            assert_eq!(listed, key != "start_action", "{key}: {line}");
        }
    }

    // local_addrs gives the default identities and `dynamic` selectors; the
    // source of IKE is the route's, so the address must be this host's.
    #[test]
    fn local_addrs_is_listed_with_what_it_takes_to_keep_it() {
        let imported = setup(&one_conn("local_addrs = 198.18.0.1", "")).import(None).unwrap();
        let notes = imported.notes.join("\n");
        assert!(notes.contains("connection c1: local_addrs = 198.18.0.1 is not imported: Causeway sends IKE from the source address of the route to the peer; if the peer expects this address, it must be on this host"), "{notes}");
        // Once: not again in the list of keys not imported.
        assert_eq!(notes.matches("local_addrs").count(), 1, "{notes}");
    }

    #[test]
    fn a_zero_lifetime_is_told_at_its_own_key_and_line() {
        for (conn, child, want) in [
            ("", "life_time = 0", "swanctl.conf:16: connection c1: children.a.life_time: 0 turns rekeying off"),
            ("", "rekey_time = 0s", "swanctl.conf:16: connection c1: children.a.rekey_time: 0 turns rekeying off"),
            (
                "",
                "life_time = 1",
                "swanctl.conf:16: connection c1: children.a.life_time: 1 s / 1.1 gives a rekey time of 0, which turns rekeying off",
            ),
            (
                "rekey_time = 0",
                "",
                "swanctl.conf:3: connection c1: rekey_time: 0 turns rekeying off; Causeway always rekeys IKE SAs",
            ),
        ] {
            let e = error(&one_conn(conn, child));
            assert!(e.contains(want), "{conn:?} {child:?}:\n{e}");
        }
    }

    // strongSwan 5.9.9+ rekeys a child given only life_time after
    // life_time / 1.1 (in floating point, truncated); 5.9.8 keeps 3600 s,
    // which the note says whenever the two differ.
    #[test]
    fn life_time_alone_gives_strongswans_rekey_time() {
        for (child, rekey, life) in [
            ("life_time = 1100", 999, Some(1100)),
            ("life_time = 66m", 3599, Some(3960)),
            ("life_time = 2h", 6545, Some(7200)),
            ("life_time = 3961s", 3600, None),
            ("rekey_time = 20m\nlife_time = 1h", 1200, None),
        ] {
            let s = setup(&one_conn("", child));
            let imported = s.import(None).unwrap();
            assert_eq!(s.load(&imported)[0].child_lifetime, Duration::from_secs(rekey), "{child}");
            let notes = imported.notes.join("\n");
            assert_eq!(notes.contains("5.9.8"), life.is_some(), "{child}: {notes}");
            if let Some(life) = life {
                let note = format!(
                    "connection c1: children.a.life_time = {life} s without rekey_time: child_lifetime = {rekey}, \
                     the rekey time strongSwan 5.9.9 and later derive (life_time / 1.1); strongSwan 5.9.8 and older (Debian \
                     bookworm's) ignore life_time here and rekey after 3600 s"
                );
                assert!(notes.contains(&note), "{child}: {notes}");
            }
        }
        // 33 s / 1.1 is 29.999..., under Causeway's 30 s least, told at the
        // line in the setting's terms, and once.
        let e = error(&one_conn("", "life_time = 33"));
        let told = "swanctl.conf:16: connection c1: children.a.life_time: 33 s gives a rekey time of 29 s (life_time \
                    / 1.1, as strongSwan derives it), outside the 30 to 86400 s Causeway takes as child_lifetime; set \
                    rekey_time";
        assert!(e.contains(told), "{e}");
        assert_eq!(e.matches("life_time").count(), 2, "{e}");
    }

    // strongSwan stops rekeying an IKE SA given reauth_time without
    // rekey_time (even reauth_time = 0), and over_time or rand_time never
    // move its rekey time; Causeway's default stays, with a note.
    #[test]
    fn reauth_time_without_rekey_time_is_told() {
        for (conn, lifetime, said) in [
            ("reauth_time = 3h", None, Some("strongSwan then does not rekey the IKE SA, but reauthenticates (replaces) it every 10800 s; Causeway does not reauthenticate, and rekeys it before its default ike_lifetime of 28800 s ends")),
            ("reauth_time = 0", None, Some("strongSwan then neither rekeys nor reauthenticates the IKE SA")),
            ("over_time = 1h\nrand_time = 10m", None, None),
            ("rekey_time = 2h\nreauth_time = 3h\nover_time = 5m", Some(7200), None),
        ] {
            let s = setup(&one_conn(conn, ""));
            let imported = s.import(None).unwrap();
            let want = lifetime.map_or(causeway_config::DEFAULT_IKE_LIFETIME, Duration::from_secs);
            assert_eq!(s.load(&imported)[0].ike_lifetime, want, "{conn}");
            let notes = imported.notes.join("\n");
            match said {
                Some(said) => assert!(notes.contains(&format!("connection c1: reauth_time without rekey_time: {said}")), "{conn}: {notes}"),
                None => assert!(!notes.contains("reauth_time without"), "{conn}: {notes}"),
            }
        }
    }

    // Two connections to one peer with one remote identity cannot be told
    // apart by a responder that picks the peer by identity: the advice is
    // to merge the children, or to give each connection its own identity.
    #[test]
    fn children_that_differ_are_told_to_merge_not_to_split_alike() {
        let e = error(&one_conn("", "   }\n   b {\n    local_ts = 10.0.0.0/16\n    remote_ts = 10.2.0.0/16"));
        assert!(e.contains("swanctl.conf:17: connection c1: children.b: its traffic selectors (local_ts, remote_ts) differ from those of children.a"), "{e}");
        assert!(e.contains("merge the children into one child whose local_ts and remote_ts list all the selectors (route-based, as Causeway's peers are), or split them into connections that each have a remote identity of their own"), "{e}");
        assert!(!e.contains("make each child its own connection"), "{e}");
        let e = error(&one_conn(
            "",
            "esp_proposals = aes128gcm16\n   }\n   b {\n    local_ts = 10.0.0.0/16\n    remote_ts = 10.1.0.0/16",
        ));
        assert!(
            e.contains("its esp_proposals differ") && e.contains("give the children the same esp_proposals"),
            "{e}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_before_anything_is_written() {
        let e = error(&TWO_DCS.replace("a long shared passphrase, with # and spaces", "short"));
        assert!(
            e.contains("connection dc-west: secrets.ike-west.secret: the key has 5 bytes; Causeway takes at least 16"),
            "{e}"
        );
        assert!(!e.contains("short\""), "the key is not shown: {e}");
    }

    #[test]
    fn one_connection_by_name() {
        let s = setup(TWO_DCS);
        let e = format!("{:#}", s.import(Some("dc-north")).err().unwrap());
        assert!(e.contains("no connection named dc-north; it has dc-east, dc-west"), "{e}");
        let imported = s.import(Some("dc-west")).unwrap();
        assert_eq!(s.load(&imported).iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["dc-west"]);
    }

    #[test]
    fn a_missing_psk_dir_says_how_to_make_it() {
        let s = setup(TWO_DCS);
        let e = format!("{:#}", import_swanctl(&s.conf, None, &s.dir.path().join("nope")).err().unwrap());
        assert!(e.contains("cannot use it (create it first: mkdir -m 700"), "{e}");
    }
}
