//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying child SAs and the IKE SA.
//! (Being written: requests are refused for now.)

use std::time::Instant;

use crate::endpoint::{Effect, Io, Peer};
use crate::ids::{notify as n, ExchangeType};
use crate::sa::IkeSa;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

pub(crate) struct ChildRekey {
    pub spi_in: u32,
}

pub(crate) struct IkeRekey {}

pub(crate) struct Collision {}

pub(crate) fn on_request(
    sa: &mut IkeSa,
    _peer: &Peer,
    io: &mut Io,
    _now: Instant,
    id: u32,
    _p: &[Payload],
) -> Vec<Effect> {
    sa.send_response(
        io,
        ExchangeType::CreateChildSa,
        id,
        &[Payload::Notify(Notify::new(n::NO_ADDITIONAL_SAS, Vec::new()))],
    );
    Vec::new()
}

pub(crate) fn start_child_rekey(_sa: &mut IkeSa, _peer: &Peer, _io: &mut Io, _now: Instant, _spi_in: u32) {}

pub(crate) fn start_ike_rekey(_sa: &mut IkeSa, _peer: &Peer, _io: &mut Io, _now: Instant) {}

pub(crate) fn on_child_rekey_response(
    _sa: &mut IkeSa,
    _peer: &Peer,
    io: &mut Io,
    _now: Instant,
    r: ChildRekey,
    _p: &[Payload],
) -> Vec<Effect> {
    io.spis_in.remove(&r.spi_in);
    Vec::new()
}

pub(crate) fn on_ike_rekey_response(
    _sa: &mut IkeSa,
    _peer: &Peer,
    _io: &mut Io,
    _now: Instant,
    _r: IkeRekey,
    _p: &[Payload],
) -> Vec<Effect> {
    Vec::new()
}
