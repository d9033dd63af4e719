//! Why a control API request was refused. The message is the reply's
//! `"error"`, shown by tunctl as is, so each says what to do instead.

use thiserror::Error;

/// A refused request. Causes are part of the message rather than a
/// `source`, so a chain printed whole does not say them twice.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("request is not valid: {0}")]
    BadRequest(serde_json::Error),
    #[error("this interface was not started from a configuration file (causewayd up --config); use wg to change it")]
    NoConfigFile,
    #[error("configuration rejected, the running one stays:\n{0}")]
    ConfigRejected(causeway_config::ConfigError),
    #[error("no peer named or keyed {0:?}")]
    NoSuchPeer(String),
    /// A field that breaks the configuration's rules for it.
    #[error("{field}: {message}")]
    Field { field: &'static str, message: String },
    #[error("a new peer needs a {0}")]
    Missing(&'static str),
    #[error("a peer with this public key exists: use `tunctl peer set`")]
    PeerExists,
    #[error("this is the interface's own public key")]
    OwnKey,
    #[error("name {0} is used by another peer")]
    NameTaken(String),
    #[error("allowed_ips: {0}; each address may belong to one peer only")]
    Overlap(String),
    #[error("cannot apply the peer: {0}")]
    Apply(causeway_wireguard::Error),
    /// IKE's sockets could not be opened for the first IPsec peer.
    #[error("cannot start IKE (UDP ports 500 and 4500): {0}; a gateway that drops root (user =) needs an IPsec peer in its configuration file at start-up to open them")]
    IkeUnavailable(String),
    /// A valid file that could not be applied (IKE's ports, the listen
    /// port): nothing of it was.
    #[error("reload refused, nothing changed: {0}")]
    ReloadRefused(String),
    /// A rekey asked of an IPsec peer with no IKE SA up; its state.
    #[error("{0} has no IKE SA up ({1}), so nothing to rekey; `tunctl peer reset` starts it over")]
    NotUp(String, String),
    /// A WireGuard peer with no endpoint: only the peer can start a handshake.
    #[error("{0} has no endpoint: only the peer can start a handshake")]
    NoEndpoint(String),
    #[error("{0}: a handshake message left less than 5 s ago (REKEY_TIMEOUT allows one per 5 s); its handshake gives new keys, or try again in a few seconds")]
    HandshakeTooSoon(String),
    /// A reset while the peer's IKE SA is being rekeyed.
    #[error("{0}: its IKE SA is being rekeyed; nothing was deleted, try again once the rekey is over (seconds)")]
    RekeyUnderWay(String),
    #[error("this gateway has no [registry] in its configuration")]
    NoRegistry,
    /// The registry refused the change or could not be reached.
    #[error("registry: {0}")]
    Registry(String),
    /// The request's task panicked; nothing more is known.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// A field error, for `map_err`.
    pub(crate) fn field<E: std::fmt::Display>(field: &'static str) -> impl FnOnce(E) -> ApiError {
        move |e| ApiError::Field { field, message: e.to_string() }
    }
}
