//! Prefixes as written in a configuration: interface addresses (host
//! bits kept) and routed prefixes (host bits must be clear).

use std::net::IpAddr;

use ipnet::IpNet;

/// A prefix refused; its text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("\"{0}\" is not an IP prefix: expected address/length, such as 10.1.0.0/16 or fd00:1::/64")]
    NotAPrefix(String),
    #[error(
        "{0} has host bits set; the prefix is {trunc} (write that, or the address as /{max})",
        trunc = .0.trunc(),
        max = .0.max_prefix_len()
    )]
    HostBits(IpNet),
}

/// An interface address: address/length, host bits kept (a bare address
/// is a single host).
pub fn parse_address(text: &str) -> Result<IpNet, PrefixError> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(n) => Ok(n),
        // A bare address means a single host, as `wg` takes it.
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| PrefixError::NotAPrefix(text.to_string())),
    }
}

/// A prefix routed to a peer: like an address, but host bits must be clear
/// so that what is written is what is routed.
pub fn parse_allowed_ip(text: &str) -> Result<IpNet, PrefixError> {
    let net = parse_address(text)?;
    if net.trunc() != net {
        return Err(PrefixError::HostBits(net));
    }
    Ok(net)
}
