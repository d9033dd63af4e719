//! `tunctl peer add|add-file|set|remove|rekey|reset`: live changes to a
//! running gateway's peers, and new keys or a fresh start for one, sent
//! to its daemon as control API requests.

use std::path::PathBuf;

use anyhow::Context;
use causeway_gateway::api::types::{PeerChange, Request, SecretText};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Add a peer.
    // The example is broken over two lines by hand: clap wraps help at 100
    // columns, and a command cut there without a `\` does not paste.
    #[command(
        after_help = "Example:\n  tunctl peer add cw0 --name dc-north --public-key KEY \\\n      --endpoint 198.18.4.2:51820 --allowed-ip 10.4.0.0/16"
    )]
    Add {
        /// Interface served by a running causewayd.
        interface: String,
        /// The operator's name for the peer (unique).
        #[arg(long)]
        name: String,
        /// The peer's public key (base64, as `wg pubkey` prints).
        #[arg(long)]
        public_key: String,
        #[command(flatten)]
        fields: PeerFields,
    },
    /// Add the peers of a file of [[peer]] tables, WireGuard or IPsec,
    /// written as in the configuration file (`tunctl import-swanctl` prints
    /// such tables; the [[peer]] part of `tunctl import-wg`'s output is
    /// one too). Every peer is checked first:
    /// one refused changes nothing. causewayd reads the PSK and key files
    /// the tables name, relative ones from FILE's directory. Like `peer
    /// add`, this lasts until the next reload, which returns to the
    /// configuration file.
    ///
    /// Example: tunctl peer add-file cw0 /etc/causeway/dc-west.toml
    AddFile {
        /// Interface served by a running causewayd.
        interface: String,
        /// The file of [[peer]] tables.
        file: PathBuf,
    },
    /// Change a peer, named by name or public key; fields not given stay.
    ///
    /// Example: tunctl peer set cw0 dc-north --endpoint 198.18.4.3:51820
    Set {
        /// Interface served by a running causewayd.
        interface: String,
        /// Name or public key of the peer.
        peer: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: PeerFields,
    },
    /// Remove a peer, named by name or public key.
    ///
    /// Example: tunctl peer remove cw0 dc-north
    Remove {
        /// Interface served by a running causewayd.
        interface: String,
        /// Name or public key of the peer.
        peer: String,
    },
    /// New keys for a peer now, without interrupting its traffic: an IPsec
    /// peer's child SAs are rekeyed (CREATE_CHILD_SA; with --ike its IKE SA
    /// too), each old SA carrying traffic until its successor takes over,
    /// as `swanctl --rekey` does; a WireGuard peer gets a new handshake.
    ///
    /// Example: tunctl peer rekey cw0 dc-west --ike
    Rekey {
        /// Interface served by a running causewayd.
        interface: String,
        /// Name (or, for a WireGuard peer, public key) of the peer.
        peer: String,
        /// Rekey the IKE SA as well (IPsec peers).
        #[arg(long)]
        ike: bool,
    },
    /// Start a peer's tunnel over: an IPsec peer's IKE SA and child SAs are
    /// deleted, the peer told, and negotiated from the start (at once when
    /// this gateway initiates to the peer), as an SRX's `clear security ike
    /// security-associations` or `swanctl --terminate` then `--initiate`; a
    /// WireGuard peer's sessions are dropped and a handshake sent. Traffic
    /// to the peer waits meanwhile, about a round trip with WireGuard and
    /// a few with IKE.
    ///
    /// Example: tunctl peer reset cw0 dc-west
    Reset {
        /// Interface served by a running causewayd.
        interface: String,
        /// Name (or, for a WireGuard peer, public key) of the peer.
        peer: String,
    },
}

#[derive(Args)]
pub struct PeerFields {
    /// Endpoint (ip:port, [v6]:port or host:port); repeat for failover
    /// order. Replaces the list.
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// Prefix routed to and accepted from the peer; repeat. Replaces the list.
    #[arg(long = "allowed-ip")]
    allowed_ips: Vec<String>,
    /// Seconds between keepalives, to hold a NAT mapping open (0 is off).
    /// `peer add` without it: off; `peer set` without it: unchanged.
    #[arg(long)]
    keepalive: Option<u16>,
    /// File holding a pre-shared key (base64), as `wg genpsk` prints.
    #[arg(long)]
    preshared_key_file: Option<PathBuf>,
    /// With several endpoints: seconds of failing handshakes before the
    /// next is tried (1 to 3600). `peer add` without it: 10; `peer set`
    /// without it: unchanged.
    #[arg(long)]
    failover_after: Option<u64>,
}

impl PeerFields {
    /// The request's fields; lists given replace the peer's.
    fn into_change(self, name: Option<String>, public_key: Option<String>) -> anyhow::Result<PeerChange> {
        let preshared_key = match self.preshared_key_file {
            Some(f) => {
                let text = causeway_config::read_secret_file(&f, None)?;
                Some(SecretText(zeroize::Zeroizing::new(text.trim().to_string())))
            }
            None => None,
        };
        let list = |l: Vec<String>| (!l.is_empty()).then_some(l);
        Ok(PeerChange {
            name,
            public_key,
            preshared_key,
            endpoints: list(self.endpoints),
            allowed_ips: list(self.allowed_ips),
            persistent_keepalive: self.keepalive,
            failover_after: self.failover_after,
        })
    }
}

impl PeerCommand {
    /// The interface to ask and the request to send.
    pub fn into_request(self) -> anyhow::Result<(String, Request)> {
        Ok(match self {
            PeerCommand::Add { interface, name, public_key, fields } => {
                (interface, Request::PeerAdd(fields.into_change(Some(name), Some(public_key))?))
            }
            PeerCommand::Set { interface, peer, name, fields } => {
                (interface, Request::PeerSet { peer, change: fields.into_change(name, None)? })
            }
            PeerCommand::Remove { interface, peer } => (interface, Request::PeerRemove { peer }),
            PeerCommand::Rekey { interface, peer, ike } => (interface, Request::PeerRekey { peer, ike }),
            PeerCommand::Reset { interface, peer } => (interface, Request::PeerReset { peer }),
            PeerCommand::AddFile { interface, file } => {
                let path = std::path::absolute(&file).with_context(|| format!("cannot locate {}", file.display()))?;
                let (text, exposed) = causeway_config::read_config_file(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                (interface, Request::PeersAdd { path, text: SecretText(text), exposed })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Peer {
        #[command(subcommand)]
        cmd: PeerCommand,
    }

    fn request(args: &[&str]) -> (String, Request) {
        let cli = Peer::try_parse_from(std::iter::once("peer").chain(args.iter().copied())).unwrap();
        cli.cmd.into_request().unwrap()
    }

    #[test]
    fn rekey_and_reset_become_their_requests() {
        let to = |peer: &str| peer.to_string();
        assert_eq!(
            request(&["rekey", "cw0", "dc-west"]),
            (to("cw0"), Request::PeerRekey { peer: to("dc-west"), ike: false })
        );
        assert_eq!(
            request(&["rekey", "cw0", "dc-west", "--ike"]),
            (to("cw0"), Request::PeerRekey { peer: to("dc-west"), ike: true })
        );
        assert_eq!(request(&["reset", "cw0", "dc-west"]), (to("cw0"), Request::PeerReset { peer: to("dc-west") }));
        assert!(Peer::try_parse_from(["peer", "reset", "cw0"]).is_err(), "the peer is required");
        // The line sent, and one without `ike` (read as false).
        let line = serde_json::to_string(&Request::PeerRekey { peer: to("x"), ike: true }).unwrap();
        assert_eq!(line, r#"{"op":"peer_rekey","peer":"x","ike":true}"#);
        let plain: Request = serde_json::from_str(r#"{"op":"peer_rekey","peer":"x"}"#).unwrap();
        assert_eq!(plain, Request::PeerRekey { peer: to("x"), ike: false });
    }

    #[test]
    fn peer_fields_become_a_change() {
        let fields = PeerFields {
            endpoints: vec!["198.18.0.2:51820".into()],
            allowed_ips: Vec::new(),
            keepalive: Some(5),
            preshared_key_file: None,
            failover_after: Some(30),
        };
        let change = fields.into_change(None, None).unwrap();
        let v = serde_json::to_value(Request::PeerSet { peer: "c".into(), change }).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"op": "peer_set", "peer": "c", "endpoints": ["198.18.0.2:51820"], "persistent_keepalive": 5,
                "failover_after": 30})
        );
    }
}
