//! Prefixes as written in a configuration: interface addresses (host
//! bits kept) and routed prefixes (host bits must be clear).

use std::net::IpAddr;

use ipnet::IpNet;

/// An interface address: address/length, host bits kept (a bare address
/// is a single host).
pub fn parse_address(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(n) => Ok(n),
        // A bare address means a single host, as `wg` takes it.
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!("\"{text}\" is not an IP prefix: expected address/length, such as 10.1.0.0/16 or fd00:1::/64")
        }),
    }
}

/// A prefix routed to a peer: like an address, but host bits must be clear
/// so that what is written is what is routed.
pub fn parse_allowed_ip(text: &str) -> Result<IpNet, String> {
    let net = parse_address(text)?;
    if net.trunc() != net {
        return Err(format!(
            "{net} has host bits set; the prefix is {} (write that, or the address as /{})",
            net.trunc(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}
