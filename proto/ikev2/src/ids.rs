//! The IANA numbers IKEv2 puts on the wire (RFC 7296 §3 and the IKEv2
//! registries), as typed values. Unknown numbers are kept as they came so
//! a proposal or notification we do not know can still be logged and
//! skipped; only the ones Causeway negotiates have names.

/// Exchange types (RFC 7296 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    IkeSaInit,
    IkeAuth,
    CreateChildSa,
    Informational,
    Other(u8),
}

impl ExchangeType {
    pub fn from_u8(v: u8) -> ExchangeType {
        match v {
            34 => ExchangeType::IkeSaInit,
            35 => ExchangeType::IkeAuth,
            36 => ExchangeType::CreateChildSa,
            37 => ExchangeType::Informational,
            other => ExchangeType::Other(other),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            ExchangeType::IkeSaInit => 34,
            ExchangeType::IkeAuth => 35,
            ExchangeType::CreateChildSa => 36,
            ExchangeType::Informational => 37,
            ExchangeType::Other(v) => v,
        }
    }
}

/// Next-payload values (RFC 7296 §3.2).
pub mod payload {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    /// RFC 7383 encrypted fragment.
    pub const SKF: u8 = 53;
}

/// Security protocol IDs in proposals, notifications and deletes.
pub mod protocol {
    pub const IKE: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
}

/// Transform types (RFC 7296 §3.3.2).
pub mod transform_type {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const DH: u8 = 4;
    pub const ESN: u8 = 5;
}

/// Transform attribute type of the key length (TV format, RFC 7296 §3.3.5).
pub const ATTR_KEY_LENGTH: u16 = 14;

/// Encryption algorithms (transform type 1).
pub mod encr {
    pub const AES_CBC: u16 = 12;
    /// AES-GCM with a 16-octet ICV (RFC 5282 for IKE, RFC 4106 for ESP).
    pub const AES_GCM_16: u16 = 20;
}

/// Pseudo-random functions (transform type 2).
pub mod prf {
    pub const HMAC_SHA2_256: u16 = 5;
    pub const HMAC_SHA2_384: u16 = 6;
    pub const HMAC_SHA2_512: u16 = 7;
}

/// Integrity algorithms (transform type 3).
pub mod integ {
    pub const NONE: u16 = 0;
    pub const HMAC_SHA2_256_128: u16 = 12;
    pub const HMAC_SHA2_384_192: u16 = 13;
    pub const HMAC_SHA2_512_256: u16 = 14;
}

/// Key exchange (Diffie-Hellman) groups (transform type 4).
pub mod dh {
    pub const NONE: u16 = 0;
    pub const MODP_2048: u16 = 14;
    pub const ECP_256: u16 = 19;
    pub const ECP_384: u16 = 20;
    pub const CURVE25519: u16 = 31;
}

/// Extended sequence numbers (transform type 5).
pub mod esn {
    pub const NO: u16 = 0;
    pub const YES: u16 = 1;
}

/// Identification types (RFC 7296 §3.5).
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods (RFC 7296 §3.8).
pub mod auth_method {
    pub const SHARED_KEY_MIC: u8 = 2;
}

/// Traffic selector types (RFC 7296 §3.13.1).
pub mod ts_type {
    pub const IPV4_ADDR_RANGE: u8 = 7;
    pub const IPV6_ADDR_RANGE: u8 = 8;
}

/// Notify message types (RFC 7296 §3.10.1, RFC 3948/7296 NAT-T, RFC 7383).
pub mod notify {
    // Errors (below 16384).
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    pub const FAILED_CP_REQUIRED: u16 = 37;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const INVALID_SELECTORS: u16 = 39;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    // Status (16384 and above).
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const SET_WINDOW_SIZE: u16 = 16385;
    pub const ADDITIONAL_TS_POSSIBLE: u16 = 16386;
    pub const IPCOMP_SUPPORTED: u16 = 16387;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;

    /// Whether a notify type reports an error (RFC 7296 §3.10.1).
    pub fn is_error(t: u16) -> bool {
        t < 16384
    }

    /// An error notification's name (RFC 7296 §3.10.1), and what it most
    /// likely means for a site-to-site tunnel: an operator reading the log
    /// should not need the RFC's table to act on the number.
    pub fn error_meaning(t: u16) -> Option<(&'static str, &'static str)> {
        const REMOTE_ACCESS: &str =
            "the peer expects a remote-access client asking for an address; Causeway is a site-to-site gateway";
        Some(match t {
            UNSUPPORTED_CRITICAL_PAYLOAD => ("UNSUPPORTED_CRITICAL_PAYLOAD", "the peer took a payload of ours for a critical one it lacks (Causeway marks none critical)"),
            INVALID_IKE_SPI => ("INVALID_IKE_SPI", "the peer no longer knows this IKE SA (it restarted?)"),
            INVALID_MAJOR_VERSION => ("INVALID_MAJOR_VERSION", "the peer does not speak IKEv2 (set it to IKEv2 only)"),
            INVALID_SYNTAX => ("INVALID_SYNTAX", "the peer could not read our message"),
            INVALID_MESSAGE_ID => ("INVALID_MESSAGE_ID", "the peer expected another message ID"),
            INVALID_SPI => ("INVALID_SPI", "the peer does not know the SA's SPI"),
            NO_PROPOSAL_CHOSEN => ("NO_PROPOSAL_CHOSEN", "no proposal in common (compare both proposal lists, PFS groups included)"),
            INVALID_KE_PAYLOAD => ("INVALID_KE_PAYLOAD", "the peer wants another key exchange group"),
            AUTHENTICATION_FAILED => ("AUTHENTICATION_FAILED", "check the PSK and both IDs on both ends"),
            SINGLE_PAIR_REQUIRED => ("SINGLE_PAIR_REQUIRED", "the peer takes one prefix each way: give local_ts and remote_ts one prefix each, for example \"0.0.0.0/0\""),
            NO_ADDITIONAL_SAS => ("NO_ADDITIONAL_SAS", "the peer takes no further child SA on this IKE SA"),
            INTERNAL_ADDRESS_FAILURE => ("INTERNAL_ADDRESS_FAILURE", REMOTE_ACCESS),
            FAILED_CP_REQUIRED => ("FAILED_CP_REQUIRED", REMOTE_ACCESS),
            TS_UNACCEPTABLE => ("TS_UNACCEPTABLE", "compare local_ts and remote_ts with the peer's selectors (a peer taking one address family needs selectors of that family only)"),
            INVALID_SELECTORS => ("INVALID_SELECTORS", "a packet did not match the SA's selectors at the peer"),
            TEMPORARY_FAILURE => ("TEMPORARY_FAILURE", "the peer is busy with another exchange of this SA; it is tried again"),
            CHILD_SA_NOT_FOUND => ("CHILD_SA_NOT_FOUND", "the peer no longer has the child SA being rekeyed"),
            _ => return None,
        })
    }
}

/// IKE header flags (RFC 7296 §3.1).
pub mod flags {
    pub const INITIATOR: u8 = 0x08;
    pub const VERSION: u8 = 0x10;
    pub const RESPONSE: u8 = 0x20;
}

/// The UDP ports of IKE and of NAT traversal (RFC 3948).
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_types_round_trip() {
        for v in 0..=255u8 {
            assert_eq!(ExchangeType::from_u8(v).to_u8(), v);
        }
        assert_eq!(ExchangeType::from_u8(34), ExchangeType::IkeSaInit);
    }

    #[test]
    fn error_notifications_are_below_16384() {
        assert!(notify::is_error(notify::AUTHENTICATION_FAILED));
        assert!(!notify::is_error(notify::INITIAL_CONTACT));
    }

    // Every error this core names has a meaning, and the log line says it.
    #[test]
    fn peer_errors_are_named_in_the_log() {
        use notify::*;
        let named = [
            UNSUPPORTED_CRITICAL_PAYLOAD,
            INVALID_IKE_SPI,
            INVALID_MAJOR_VERSION,
            INVALID_SYNTAX,
            INVALID_MESSAGE_ID,
            INVALID_SPI,
            NO_PROPOSAL_CHOSEN,
            INVALID_KE_PAYLOAD,
            AUTHENTICATION_FAILED,
            SINGLE_PAIR_REQUIRED,
            NO_ADDITIONAL_SAS,
            INTERNAL_ADDRESS_FAILURE,
            FAILED_CP_REQUIRED,
            TS_UNACCEPTABLE,
            INVALID_SELECTORS,
            TEMPORARY_FAILURE,
            CHILD_SA_NOT_FOUND,
        ];
        for t in named {
            assert!(error_meaning(t).is_some_and(|(n, m)| !n.is_empty() && !m.is_empty()), "{t}");
        }
        let line = crate::Failure::PeerError { notify: SINGLE_PAIR_REQUIRED }.to_string();
        assert!(line.starts_with("the peer answered with error notification 34 (SINGLE_PAIR_REQUIRED): "), "{line}");
        assert!(line.contains("local_ts and remote_ts one prefix each"), "{line}");
        let unknown = crate::Failure::PeerError { notify: 8191 }.to_string();
        assert_eq!(unknown, "the peer answered with error notification 8191");
    }
}
