//! Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, as WireGuard uses it (whitepaper
//! section 5.4.2 to 5.4.6). Pure functions over explicit state: the caller
//! (`Peer`) decides when a state is committed, so a message that fails any
//! check leaves the peer exactly as it was.
//!
//! Variable names follow the whitepaper: `ck` is the chaining key C, `h` the
//! hash H, `e`/`s` ephemeral/static keys, `ss` the static-static DH.

use std::time::SystemTime;

use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::messages::{
    initiation as ini, read_u32, response as resp, INITIATION_LEN, RESPONSE_LEN, TYPE_INITIATION, TYPE_RESPONSE,
};
use crate::primitives::{hash, kdf, open_once, seal_once, Key, CONSTRUCTION, IDENTIFIER};
use crate::{Error, Keypair, PresharedKey, PublicKey, StaticSecret, Tai64N, Time};

/// Where one peer's handshake stands.
#[derive(Default)]
pub enum HandshakeState {
    #[default]
    None,
    /// We sent an initiation and wait for the response.
    InitiationSent(InitiatorState),
    /// We consumed an initiation and may answer it (kept only until the
    /// response is created).
    InitiationConsumed(ResponderState),
}

impl HandshakeState {
    pub fn is_none(&self) -> bool {
        matches!(self, HandshakeState::None)
    }

    /// The local index of an initiation in flight.
    pub fn initiation_index(&self) -> Option<u32> {
        match self {
            HandshakeState::InitiationSent(s) => Some(s.local_index),
            _ => None,
        }
    }
}

pub struct InitiatorState {
    pub(crate) local_index: u32,
    ck: Key,
    h: Key,
    e: StaticSecret,
}

pub struct ResponderState {
    remote_index: u32,
    ck: Key,
    h: Key,
    remote_ephemeral: PublicKey,
}

/// An initiation whose static key has been decrypted but whose timestamp has
/// not: enough to find the peer it claims to come from.
pub struct PartialInitiation {
    pub remote_static: PublicKey,
    remote_index: u32,
    remote_ephemeral: PublicKey,
    ck: Key,
    h: Key,
    encrypted_timestamp: [u8; 28],
}

fn initial_state(responder_static: &PublicKey) -> (Key, Key) {
    let ck = Zeroizing::new(hash(&[CONSTRUCTION]));
    let h = hash(&[&ck[..], IDENTIFIER]);
    let h = Zeroizing::new(hash(&[&h, responder_static.as_bytes()]));
    (ck, h)
}

fn mix_hash(h: &mut Key, data: &[u8]) {
    **h = hash(&[&h[..], data]);
}

/// C = KDF1(C, input)
fn mix_key(ck: &mut Key, input: &[u8]) {
    let [c] = kdf::<1>(ck, input);
    *ck = c;
}

/// (C, k) = KDF2(C, input): returns k.
fn mix_key_and_take(ck: &mut Key, input: &[u8]) -> Key {
    let [c, k] = kdf::<2>(ck, input);
    *ck = c;
    k
}

/// Builds an initiation (MACs left zero for the cookie generator to fill).
pub(crate) fn create_initiation(
    local_static: &StaticSecret,
    remote_static: &PublicKey,
    ss: &[u8; 32],
    local_index: u32,
    wall: SystemTime,
) -> Result<([u8; INITIATION_LEN], InitiatorState), Error> {
    let (mut ck, mut h) = initial_state(remote_static);
    let mut msg = [0u8; INITIATION_LEN];
    msg[0] = TYPE_INITIATION as u8;
    msg[ini::SENDER..ini::SENDER + 4].copy_from_slice(&local_index.to_le_bytes());

    let e = StaticSecret::random(&mut OsRng);
    let e_pub = e.public_key();
    msg[ini::EPHEMERAL..ini::STATIC].copy_from_slice(e_pub.as_bytes());
    mix_key(&mut ck, e_pub.as_bytes());
    mix_hash(&mut h, e_pub.as_bytes());

    let es = e.diffie_hellman(remote_static)?;
    let k = mix_key_and_take(&mut ck, &es[..]);
    seal_once(&k, local_static.public_key().as_bytes(), &h[..], &mut msg[ini::STATIC..ini::TIMESTAMP]);
    mix_hash(&mut h, &msg[ini::STATIC..ini::TIMESTAMP]);

    let k = mix_key_and_take(&mut ck, ss);
    let ts = Tai64N::from_system_time(wall);
    seal_once(&k, ts.as_bytes(), &h[..], &mut msg[ini::TIMESTAMP..ini::MAC1]);
    mix_hash(&mut h, &msg[ini::TIMESTAMP..ini::MAC1]);

    Ok((msg, InitiatorState { local_index, ck, h, e }))
}

/// First half of consuming an initiation: needs only our static key, and
/// yields the initiator's claimed static key so the caller can find the peer.
pub fn consume_initiation_static(
    local_static: &StaticSecret,
    msg: &[u8; INITIATION_LEN],
) -> Result<PartialInitiation, Error> {
    let (mut ck, mut h) = initial_state(&local_static.public_key());
    let e_bytes: [u8; 32] = msg[ini::EPHEMERAL..ini::STATIC].try_into().expect("32 bytes");
    let remote_ephemeral = PublicKey::from_bytes(e_bytes);
    mix_key(&mut ck, &e_bytes);
    mix_hash(&mut h, &e_bytes);

    let es = local_static.diffie_hellman(&remote_ephemeral)?;
    let k = mix_key_and_take(&mut ck, &es[..]);
    let s = open_once::<32>(&k, &msg[ini::STATIC..ini::TIMESTAMP], &h[..])?;
    mix_hash(&mut h, &msg[ini::STATIC..ini::TIMESTAMP]);

    Ok(PartialInitiation {
        remote_static: PublicKey::from_bytes(*s),
        remote_index: read_u32(&msg[..], ini::SENDER),
        remote_ephemeral,
        ck,
        h,
        encrypted_timestamp: msg[ini::TIMESTAMP..ini::MAC1].try_into().expect("28 bytes"),
    })
}

/// Second half: with the peer's precomputed static-static DH, authenticates
/// the initiator and recovers its timestamp.
pub(crate) fn consume_initiation_finish(
    p: PartialInitiation,
    ss: &[u8; 32],
) -> Result<(Tai64N, ResponderState), Error> {
    let PartialInitiation { remote_index, remote_ephemeral, mut ck, mut h, encrypted_timestamp, .. } = p;
    let k = mix_key_and_take(&mut ck, ss);
    let ts = open_once::<12>(&k, &encrypted_timestamp, &h[..])?;
    mix_hash(&mut h, &encrypted_timestamp);
    Ok((Tai64N::from_bytes(*ts), ResponderState { remote_index, ck, h, remote_ephemeral }))
}

/// Builds the response (MACs left zero) and derives the responder's keypair.
pub(crate) fn create_response(
    state: ResponderState,
    remote_static: &PublicKey,
    psk: &PresharedKey,
    local_index: u32,
    now: Time,
) -> Result<([u8; RESPONSE_LEN], Keypair), Error> {
    let ResponderState { remote_index, mut ck, mut h, remote_ephemeral } = state;
    let mut msg = [0u8; RESPONSE_LEN];
    msg[0] = TYPE_RESPONSE as u8;
    msg[resp::SENDER..resp::SENDER + 4].copy_from_slice(&local_index.to_le_bytes());
    msg[resp::RECEIVER..resp::RECEIVER + 4].copy_from_slice(&remote_index.to_le_bytes());

    let e = StaticSecret::random(&mut OsRng);
    let e_pub = e.public_key();
    msg[resp::EPHEMERAL..resp::EMPTY].copy_from_slice(e_pub.as_bytes());
    mix_key(&mut ck, e_pub.as_bytes());
    mix_hash(&mut h, e_pub.as_bytes());
    mix_key(&mut ck, &e.diffie_hellman(&remote_ephemeral)?[..]);
    mix_key(&mut ck, &e.diffie_hellman(remote_static)?[..]);

    let [c, tau, k] = kdf::<3>(&ck, psk.as_bytes());
    ck = c;
    mix_hash(&mut h, &tau[..]);
    seal_once(&k, &[], &h[..], &mut msg[resp::EMPTY..resp::MAC1]);

    let [recv, send] = kdf::<2>(&ck, &[]);
    Ok((msg, Keypair::new(&send, &recv, local_index, remote_index, now, false)))
}

/// Consumes a response to our initiation and derives the initiator's keypair.
/// Borrows the state: on any error the initiation stays in flight.
pub(crate) fn consume_response(
    state: &InitiatorState,
    msg: &[u8; RESPONSE_LEN],
    local_static: &StaticSecret,
    psk: &PresharedKey,
    now: Time,
) -> Result<Keypair, Error> {
    if read_u32(&msg[..], resp::RECEIVER) != state.local_index {
        return Err(Error::UnexpectedResponse);
    }
    let mut ck = state.ck.clone();
    let mut h = state.h.clone();
    let e_bytes: [u8; 32] = msg[resp::EPHEMERAL..resp::EMPTY].try_into().expect("32 bytes");
    let remote_ephemeral = PublicKey::from_bytes(e_bytes);
    mix_key(&mut ck, &e_bytes);
    mix_hash(&mut h, &e_bytes);
    mix_key(&mut ck, &state.e.diffie_hellman(&remote_ephemeral)?[..]);
    mix_key(&mut ck, &local_static.diffie_hellman(&remote_ephemeral)?[..]);

    let [c, tau, k] = kdf::<3>(&ck, psk.as_bytes());
    ck = c;
    mix_hash(&mut h, &tau[..]);
    open_once::<0>(&k, &msg[resp::EMPTY..resp::MAC1], &h[..])?;

    let [send, recv] = kdf::<2>(&ck, &[]);
    let remote_index = read_u32(&msg[..], resp::SENDER);
    Ok(Keypair::new(&send, &recv, state.local_index, remote_index, now, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Side {
        s: StaticSecret,
    }

    fn sides() -> (Side, Side, Zeroizing<[u8; 32]>) {
        let a = Side { s: StaticSecret::random(&mut OsRng) };
        let b = Side { s: StaticSecret::random(&mut OsRng) };
        let ss = a.s.diffie_hellman(&b.s.public_key()).unwrap();
        (a, b, ss)
    }

    fn full_handshake(psk_i: &PresharedKey, psk_r: &PresharedKey) -> Result<(Keypair, Keypair), Error> {
        let (a, b, ss) = sides();
        let (init, ist) = create_initiation(&a.s, &b.s.public_key(), &ss, 7, SystemTime::now())?;
        let partial = consume_initiation_static(&b.s, &init)?;
        assert_eq!(partial.remote_static, a.s.public_key());
        let (_, rst) = consume_initiation_finish(partial, &ss)?;
        let (response, kb) = create_response(rst, &a.s.public_key(), psk_r, 9, Time::ZERO)?;
        let ka = consume_response(&ist, &response, &a.s, psk_i, Time::ZERO)?;
        Ok((ka, kb))
    }

    #[test]
    fn keys_agree_with_and_without_psk() {
        for psk in [PresharedKey::default(), PresharedKey::random(&mut OsRng)] {
            let (ka, kb) = full_handshake(&psk, &psk).unwrap();
            assert_eq!((ka.local_index, ka.remote_index), (7, 9));
            assert_eq!((kb.local_index, kb.remote_index), (9, 7));
            let mut buf = [0u8; 48];
            buf[16..20].copy_from_slice(b"ping");
            let n = ka.encrypt(&mut buf, 4, 1420).unwrap();
            assert_eq!(&kb.decrypt(&mut buf[..n]).unwrap()[..4], b"ping");
            let n = kb.encrypt(&mut buf, 4, 1420).unwrap();
            assert_eq!(&ka.decrypt(&mut buf[..n]).unwrap()[..4], b"ping");
        }
    }

    #[test]
    fn psk_mismatch_fails_the_response() {
        let r = full_handshake(&PresharedKey::default(), &PresharedKey::random(&mut OsRng));
        assert_eq!(r.unwrap_err(), Error::DecryptionFailed);
    }

    #[test]
    fn initiation_for_someone_else_does_not_decrypt() {
        let (a, b, ss) = sides();
        let (init, _) = create_initiation(&a.s, &b.s.public_key(), &ss, 1, SystemTime::now()).unwrap();
        let c = StaticSecret::random(&mut OsRng);
        assert_eq!(consume_initiation_static(&c, &init).err(), Some(Error::DecryptionFailed));
    }

    #[test]
    fn every_flipped_bit_of_the_encrypted_fields_is_caught() {
        let (a, b, ss) = sides();
        let (init, _) = create_initiation(&a.s, &b.s.public_key(), &ss, 1, SystemTime::now()).unwrap();
        for byte in ini::EPHEMERAL..ini::MAC1 {
            let mut m = init;
            m[byte] ^= 0x10;
            let r = consume_initiation_static(&b.s, &m).and_then(|p| consume_initiation_finish(p, &ss));
            assert!(r.is_err(), "flip at byte {byte} went unnoticed");
        }
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (a, b, ss) = sides();
        let (mut init, _) = create_initiation(&a.s, &b.s.public_key(), &ss, 1, SystemTime::now()).unwrap();
        init[ini::EPHEMERAL..ini::STATIC].fill(0);
        assert_eq!(consume_initiation_static(&b.s, &init).err(), Some(Error::LowOrderKey));
    }

    #[test]
    fn response_to_another_index_is_refused() {
        let (a, b, ss) = sides();
        let (init, ist) = create_initiation(&a.s, &b.s.public_key(), &ss, 7, SystemTime::now()).unwrap();
        let (_, rst) = consume_initiation_finish(consume_initiation_static(&b.s, &init).unwrap(), &ss).unwrap();
        let (mut response, _) =
            create_response(rst, &a.s.public_key(), &PresharedKey::default(), 9, Time::ZERO).unwrap();
        response[resp::RECEIVER] ^= 1;
        assert_eq!(
            consume_response(&ist, &response, &a.s, &PresharedKey::default(), Time::ZERO).unwrap_err(),
            Error::UnexpectedResponse
        );
    }
}
