//! Causeway's ESP core (RFC 4303, tunnel mode), sans-IO: one child SA's
//! sealing and opening in place, its sequence numbers and replay window.
//! The data plane calls it from every worker at once; IKE (in
//! `causeway-ikev2`) makes the keys.
#![forbid(unsafe_code)]
