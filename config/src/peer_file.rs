//! A file of peers alone, for adding them to a running gateway
//! (`tunctl peer add-file`): the `[[peer]]` tables of the configuration
//! file, of either protocol, checked by the same rules and located the
//! same way. The rules that need the whole configuration (the interface's
//! own key, the running peers' names and prefixes) are the daemon's to
//! apply against what it runs.

use std::path::Path;

use crate::checker::Checker;
use crate::locate::join;
use crate::types::{IpsecPeer, Peer};
use crate::validate::{check_peers, read_raw};
use crate::ConfigError;

/// The peers of a peer file, in the order written.
#[derive(Debug)]
pub struct PeerFile {
    pub peers: Vec<Peer>,
    pub ipsec_peers: Vec<IpsecPeer>,
}

impl PeerFile {
    /// Every peer's name, in the order written per protocol.
    pub fn names(&self) -> Vec<&str> {
        self.peers.iter().map(|p| p.name.as_str()).chain(self.ipsec_peers.iter().map(|p| p.name.as_str())).collect()
    }
}

/// Checks peer-file text; `path` names it in errors and anchors relative
/// `psk_file` and `preshared_key_file` paths.
/// `exposed`: the file's permission bits when its group or others may read
/// it; a key written inline in it is then refused. `owners`: who may own
/// the PSK files it names besides root and this process's user (the peer
/// file's owner, `key::check_owner`).
pub fn parse_peers(source: &str, path: &Path, exposed: Option<u32>, owners: &[u32]) -> Result<PeerFile, ConfigError> {
    let owners = crate::key::Owners { uids: owners.to_vec(), user: None };
    let mut c = Checker { source, file: path, exposed, owners, lookup_user: false, problems: Vec::new() };
    let Some(raw) = read_raw(&mut c) else {
        return Err(ConfigError::Invalid(c.problems));
    };
    let only_peers = "a peer file holds [[peer]] tables only; this belongs in the gateway's configuration file";
    if let Some(i) = &raw.interface {
        c.report(i.span(), "interface", only_peers);
    }
    if let Some(s) = raw.site.first() {
        c.report(s.span(), "site[1]", only_peers);
    }
    if let Some(r) = &raw.registry {
        c.report(r.span(), "registry", only_peers);
    }
    if raw.peer.is_empty() {
        c.report(0..0, "peer", "no [[peer]] table: nothing to add");
    }
    let (peers, ipsec_peers) = check_peers(&mut c, &raw.peer);
    // A site's gateways change with its prefixes' routes and health:
    // through the configuration file and a reload, or the registry.
    for (i, p) in raw.peer.iter().enumerate() {
        if let Some(s) = &p.get_ref().site {
            c.report(
                s.span(),
                join(&format!("peer[{}]", i + 1), "site"),
                "a site's gateways are set in the configuration file (then reload) or through the registry",
            );
        }
    }
    c.cross_checks(&raw.peer, &peers, &ipsec_peers, None);
    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| p.line);
        return Err(ConfigError::Invalid(c.problems));
    }
    Ok(PeerFile {
        peers: peers.into_iter().map(|(_, p)| p).collect(),
        ipsec_peers: ipsec_peers.into_iter().map(|(_, p)| p).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";
    const IDS: &str = "local_id = \"gw1.dc-main.example\"\nremote_id = \"gw1.dc-east.example\"\n";

    fn problems(src: &str, path: &Path) -> Vec<String> {
        match parse_peers(src, path, None, &[]) {
            Err(ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn psk_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("east.psk");
        std::fs::write(&psk, "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        dir
    }

    #[test]
    fn peers_of_both_protocols_with_the_files_rules() {
        let dir = psk_dir();
        let path = dir.path().join("peers.toml");
        let src = format!(
            "[[peer]]\nname = \"north\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.4.0.0/16\"]\n\n\
             [[peer]]\nname = \"east\"\nprotocol = \"ipsec\"\nendpoints = [\"198.18.0.2\"]\n{IDS}\
             psk_file = \"east.psk\"\nallowed_ips = [\"10.5.0.0/16\"]\n"
        );
        let f = parse_peers(&src, &path, None, &[]).unwrap();
        assert_eq!(f.names(), ["north", "east"]);
        let east = &f.ipsec_peers[0];
        assert_eq!(east.psk.0.len(), 32, "the PSK file, relative to the peer file");
        assert_eq!(east.child_lifetime, crate::DEFAULT_CHILD_LIFETIME, "the file's defaults apply");
    }

    #[test]
    fn only_peers_and_every_problem_located() {
        let dir = psk_dir();
        let path = dir.path().join("peers.toml");
        let src = format!(
            "[interface]\nprivate_key_file = \"x\"\n\n\
             [[peer]]\nname = \"north\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.4.0.0/16\"]\nsite = \"dc\"\n\n\
             [[peer]]\nname = \"east\"\nprotocol = \"ipsec\"\n{IDS}psk_file = \"east.psk\"\nallowed_ips = [\"10.4.1.0/24\"]\n"
        );
        let p = problems(&src, &path);
        assert!(p[0].contains("peers.toml:1: interface: a peer file holds [[peer]] tables only"), "{p:?}");
        assert!(p.iter().any(|l| l.contains(":8: peer[1].site: a site's gateways are set")), "{p:?}");
        assert!(p.iter().any(|l| l.contains(":16: peer[2].allowed_ips: 10.4.1.0/24 lies inside 10.4.0.0/16")), "{p:?}");
        assert_eq!(p.len(), 3, "{p:?}");
        let p = problems("", &path);
        assert!(p[0].ends_with("peer: no [[peer]] table: nothing to add"), "{p:?}");
    }

    #[test]
    fn a_readable_psk_file_is_refused() {
        let dir = psk_dir();
        std::fs::set_permissions(dir.path().join("east.psk"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = format!("[[peer]]\nname = \"east\"\nprotocol = \"ipsec\"\n{IDS}psk_file = \"east.psk\"\n");
        let p = problems(&src, &dir.path().join("peers.toml"));
        assert!(p[0].contains(":6: peer[1].psk_file:"), "{p:?}");
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn an_inline_psk_in_a_peer_file_others_may_read_is_refused() {
        let path = std::path::Path::new("/etc/causeway/more.toml");
        let src = "[[peer]]\nname = \"b\"\npublic_key = \"Cc8LbKRR2r5vwJTigLNRnTrhc7L4uJLTd9RXJdLA2EA=\"\n\
             preshared_key = \"CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=\"\n";
        let Err(e) = parse_peers(src, path, Some(0o644), &[]) else {
            panic!("an inline PSK in a readable file was taken")
        };
        let text = e.to_string();
        assert!(text.contains("more.toml:4: peer[1].preshared_key:") && text.contains("mode 644"), "{text}");
        assert!(parse_peers(src, path, None, &[]).is_ok());
    }
}
