//! `tunctl site join|leave|set|remove`: changes to the fleet registry
//! (etcd), sent to the gateway's daemon, which holds the connection and the
//! credentials; tunctl itself never talks to the store.

use causeway_gateway::api::types::Request;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SiteCommand {
    /// Register this gateway in SITE: it publishes its record there (and
    /// withdraws the one in the site it was in), so every other site's
    /// gateways add it as a peer. Lasts until the daemon restarts, which
    /// registers it in the configuration's [registry] site again.
    ///
    /// Example: tunctl site join cw0 east
    Join {
        /// Interface of a causewayd with [registry] in its configuration.
        interface: String,
        /// The site to register this gateway in.
        site: String,
    },
    /// Withdraw this gateway's record: the others remove it as a peer and
    /// move its flows to their site's other gateways. It keeps running and
    /// keeps following the registry.
    ///
    /// Example: tunctl site leave cw0
    Leave {
        /// Interface of a causewayd with [registry] in its configuration.
        interface: String,
    },
    /// Write a site's prefixes to the registry (replacing its list): every
    /// gateway routes them to that site's gateways.
    ///
    /// Example: tunctl site set cw0 west 10.2.0.0/16 fd00:2::/48
    Set {
        /// Interface of a causewayd with [registry] in its configuration.
        interface: String,
        /// The site whose prefixes these are.
        site: String,
        /// Prefixes with host bits clear, such as 10.2.0.0/16.
        #[arg(required = true)]
        prefixes: Vec<String>,
    },
    /// Remove a site's prefixes from the registry; its gateways stay
    /// registered until they leave.
    ///
    /// Example: tunctl site remove cw0 west
    Remove {
        /// Interface of a causewayd with [registry] in its configuration.
        interface: String,
        /// The site whose prefixes go.
        site: String,
    },
}

impl SiteCommand {
    /// The interface to ask and the request for it.
    pub fn into_request(self) -> (String, Request) {
        match self {
            SiteCommand::Join { interface, site } => (interface, Request::SiteJoin { site }),
            SiteCommand::Leave { interface } => (interface, Request::SiteLeave),
            SiteCommand::Set { interface, site, prefixes } => (interface, Request::SiteSet { site, prefixes }),
            SiteCommand::Remove { interface, site } => (interface, Request::SiteRemove { site }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_requests_on_the_wire() {
        let (i, r) =
            SiteCommand::Set { interface: "cw0".into(), site: "west".into(), prefixes: vec!["10.2.0.0/16".into()] }
                .into_request();
        assert_eq!(i, "cw0");
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({"op": "site_set", "site": "west", "prefixes": ["10.2.0.0/16"]})
        );
        let (_, r) = SiteCommand::Leave { interface: "cw0".into() }.into_request();
        assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!({"op": "site_leave"}));
        let (_, r) = SiteCommand::Join { interface: "cw0".into(), site: "east".into() }.into_request();
        assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!({"op": "site_join", "site": "east"}));
    }
}
