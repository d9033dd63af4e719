//! Causeway's configuration: a TOML file describing one gateway interface
//! and its peers, parsed into typed values that cannot be invalid.
//!
//! Parse, don't validate: [`load`] and [`parse`] return either a [`Config`]
//! whose every field is usable as is, or every problem found, each naming
//! the file, line and field and saying what was expected.

#![forbid(unsafe_code)]

mod checker;
mod error;
mod ipsec;
mod key;
mod locate;
mod peer_file;
mod prefix;
pub mod proposals;
mod registry;
pub mod rules;
mod schema;
mod selector;
mod sites;
mod types;
mod validate;

pub use error::{ConfigError, Problem};
pub use ipsec::{shared_address_clash, unreached};
pub use key::{
    check_owner, exposed_mode, exposure, open_regular, parse_key, read_config_file, read_secret_file, KeyError, Owners,
};
pub use peer_file::{parse_peers, PeerFile};
pub use prefix::{parse_address, parse_allowed_ip, PrefixError};
pub use registry::{
    DEFAULT_LEASE_TTL, DEFAULT_REGISTRY_FAILOVER, DEFAULT_REGISTRY_KEEPALIVE, DEFAULT_REGISTRY_PREFIX, LEASE_TTL_SECS,
};
pub use selector::{protocol_has_ports, SelectorError, TrafficSelector};
pub use types::{
    Config, Endpoint, Interface, Peer, Registry, RegistryTls, RouteTable, Site, DEFAULT_DNS_REFRESH,
    DEFAULT_FAILOVER_AFTER, DEFAULT_LISTEN_PORT, DEFAULT_MTU, DEFAULT_MTU_IPSEC, MAX_MTU, MIN_MTU,
};
pub use types::{
    Encap, EndpointError, Identity, IdentityError, IpsecPeer, Psk, CHILD_LIFETIME_SECONDS, DEFAULT_CHILD_LIFETIME,
    DEFAULT_DPD_INTERVAL, DEFAULT_IKE_LIFETIME, DEFAULT_NAT_KEEPALIVE, IKE_PORT, NAT_T_PORT,
};

use std::path::Path;

/// Reads and validates the configuration file at `path`. Relative key file
/// paths are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, false)
}

/// As `load`, for a file about to be started (`up`, `check`): the user
/// to run as must also exist on this host.
pub fn load_to_start(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, true)
}

fn load_with(path: &Path, lookup_user: bool) -> Result<Config, ConfigError> {
    let (source, meta) =
        key::read_with_metadata(path).map_err(|reason| ConfigError::Read { path: path.to_path_buf(), reason })?;
    if let Some(mode) = key::writable_by_others(&meta) {
        return Err(ConfigError::Writable { path: path.to_path_buf(), mode });
    }
    let exposed = exposed_mode(&meta);
    use std::os::unix::fs::MetadataExt;
    validate::validate(&source, path, exposed, Some(meta.uid()), lookup_user)
}

/// Validates configuration text; `path` names it in errors and anchors
/// relative key file paths.
pub fn parse(source: &str, path: &Path) -> Result<Config, ConfigError> {
    validate::validate(source, path, None, None, false)
}
