//! Rules for single values, wherever they come from: the configuration
//! file (which adds the line and field), `causewayd --workers` and the live
//! control API (`tunctl peer add/set`) call these, so a value accepted by
//! one is accepted by all. Messages say what was expected and, except for
//! names, what was given.

use std::time::Duration;

/// Most data-plane worker threads, each with its own TUN queue: the
/// kernel's limit of queues on one TUN device (MAX_TAP_QUEUES).
pub const MAX_WORKERS: u64 = 256;
/// Longest peer name: it is a metric label and a table column.
pub const MAX_PEER_NAME: usize = 64;
/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// Bounds of `failover_after`, in seconds.
pub const FAILOVER_AFTER_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// Characters of peer, interface and user names: safe in a shell, a path,
/// a metric label and a log line alike.
fn name_chars(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A value these rules refuse; its text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("expected a name of 1 to {max} characters from a-z, A-Z, 0-9, '-', '_', '.'", max = MAX_PEER_NAME)]
    PeerName,
    #[error(
        "expected an interface name of 1 to {max} characters from a-z, A-Z, 0-9, '-', '_', '.'",
        max = MAX_INTERFACE_NAME
    )]
    InterfaceName,
    #[error(
        "expected an interface name of 1 to {max} characters from a-z, A-Z, 0-9, '_', '=', '+', '.', '-'",
        max = MAX_INTERFACE_NAME
    )]
    WgQuickInterfaceName,
    #[error("expected 1 to {max} worker threads (or 0 for one per core), got {0}", max = MAX_WORKERS)]
    Workers(u64),
    #[error(
        "expected {low} to {high} seconds, got {0}",
        low = FAILOVER_AFTER_SECS.start(),
        high = FAILOVER_AFTER_SECS.end()
    )]
    FailoverAfter(u64),
}

/// A peer's name.
pub fn peer_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() || name.len() > MAX_PEER_NAME || !name_chars(name) {
        return Err(RuleError::PeerName);
    }
    Ok(())
}

/// An interface's name.
pub fn interface_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME || !name_chars(name) {
        return Err(RuleError::InterfaceName);
    }
    Ok(())
}

/// The name wg-quick gives an interface it starts `causewayd IFNAME` for:
/// wg-quick's own rule (`[a-zA-Z0-9_=+.-]{1,15}`), wider than a name in
/// the configuration file, since a drop-in takes whatever wg-quick takes.
pub fn wg_quick_interface_name(name: &str) -> Result<(), RuleError> {
    let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || "_=+.-".contains(c));
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME || !ok {
        return Err(RuleError::WgQuickInterfaceName);
    }
    Ok(())
}

/// A worker count: `None` (0) is one per core.
pub fn workers(n: u64) -> Result<Option<usize>, RuleError> {
    match n {
        0 => Ok(None),
        // MAX_WORKERS fits any usize this runs on.
        n if n <= MAX_WORKERS => Ok(Some(n as usize)),
        n => Err(RuleError::Workers(n)),
    }
}

/// How long handshakes to one endpoint may fail before the next is tried.
pub fn failover_after(secs: u64) -> Result<Duration, RuleError> {
    if FAILOVER_AFTER_SECS.contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(RuleError::FailoverAfter(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(peer_name("dc-east.1_a").is_ok());
        assert!(peer_name(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(peer_name(bad).unwrap_err().to_string().contains("1 to 64 characters"), "{bad:?}");
        }
        assert!(interface_name("cw0").is_ok());
        assert!(interface_name("this-name-is-too-long").is_err());
        assert!(interface_name("a/b").is_err());
    }

    #[test]
    fn worker_counts() {
        assert_eq!(workers(0), Ok(None));
        assert_eq!(workers(1), Ok(Some(1)));
        assert_eq!(workers(256), Ok(Some(256)));
        assert!(workers(257).unwrap_err().to_string().contains("got 257"));
        assert!(wg_quick_interface_name("wg+dc=1").is_ok());
        assert!(wg_quick_interface_name("wg/0").is_err());
        assert!(wg_quick_interface_name("sixteen-chars-ab").is_err());
        assert!(wg_quick_interface_name("").is_err());
    }

    #[test]
    fn failover_bounds() {
        assert_eq!(failover_after(1), Ok(Duration::from_secs(1)));
        assert_eq!(failover_after(3600), Ok(Duration::from_secs(3600)));
        assert_eq!(failover_after(0).unwrap_err().to_string(), "expected 1 to 3600 seconds, got 0");
        assert!(failover_after(3601).is_err());
    }
}
