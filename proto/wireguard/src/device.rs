//! The interface-wide protocol state: our identity, the peers, the index
//! table and the responder's cookie checker. Every entry point takes the
//! time; none blocks, and all may be called from many threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::cookie::reply_receiver;
use crate::messages::{self, initiation, read_u32, Message, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN};
use crate::{
    consume_initiation_static, CookieChecker, Error, IndexEntry, IndexTable, Keypair, LoadMonitor, Peer, PresharedKey,
    PublicKey, StaticSecret, Time, TimerAction,
};

struct Identity {
    secret: StaticSecret,
    public: PublicKey,
    checker: CookieChecker,
}

/// What a received datagram turned out to be, and what the caller must do.
#[derive(Debug)]
pub enum Received<'a> {
    /// A valid initiation: send `response` back to the source, which is now
    /// the peer's endpoint.
    HandshakeResponse { peer: Arc<Peer>, response: [u8; RESPONSE_LEN] },
    /// We are under load and the message carried no valid MAC2: send the
    /// cookie reply back to the source. No state changed.
    CookieReply { reply: [u8; COOKIE_REPLY_LEN] },
    /// Our initiation was answered; the session is current. The caller sends
    /// queued packets, or a keepalive so the responder can confirm the session.
    SessionEstablished { peer: Arc<Peer> },
    /// A cookie for our next handshake message was stored.
    CookieStored { peer: Arc<Peer> },
    /// Decrypted data. `plaintext` is the padded inner packet; the caller
    /// trims it to the IP length and applies the allowed-IPs source filter.
    /// `rekey` asks the caller to start a handshake.
    Data { peer: Arc<Peer>, plaintext: &'a mut [u8], rekey: bool },
    /// An authenticated keepalive.
    Keepalive { peer: Arc<Peer> },
}

/// What the caller should do after `Device::seal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub len: usize,
    /// The session is due for renewal: start a handshake.
    pub rekey: bool,
}

#[derive(Default)]
pub struct Device {
    identity: RwLock<Option<Arc<Identity>>>,
    peers: RwLock<HashMap<PublicKey, Arc<Peer>>>,
    indices: IndexTable,
    load: LoadMonitor,
    /// Handshake messages per source while under load (`ratelimit.rs`).
    rate: crate::ratelimit::RateLimiter,
}

/// The bytes a cookie is bound to: source IP then port, as the kernel does.
pub fn address_bytes(addr: &SocketAddr) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    match addr {
        SocketAddr::V4(a) => {
            b[..4].copy_from_slice(&a.ip().octets());
            b[4..6].copy_from_slice(&a.port().to_be_bytes());
            (b, 6)
        }
        SocketAddr::V6(a) => {
            b[..16].copy_from_slice(&a.ip().octets());
            b[16..].copy_from_slice(&a.port().to_be_bytes());
            (b, 18)
        }
    }
}

impl Device {
    pub fn new(secret: Option<StaticSecret>) -> Device {
        let d = Device::default();
        d.set_private_key(secret);
        d
    }

    fn identity(&self) -> Result<Arc<Identity>, Error> {
        self.identity.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(Error::NoPrivateKey)
    }

    /// Sets (or removes) the interface's private key. Every peer's sessions
    /// are dropped, since they were keyed to the old identity; a peer whose
    /// public key equals the new one is removed, as WireGuard does.
    pub fn set_private_key(&self, secret: Option<StaticSecret>) {
        let identity = secret.map(|secret| {
            let public = secret.public_key();
            Arc::new(Identity { checker: CookieChecker::new(&public), secret, public })
        });
        if let Some(id) = &identity {
            if self.peer(&id.public).is_some() {
                self.remove_peer(&id.public.clone());
            }
        }
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = identity.clone();
        for peer in self.peers() {
            // The key first, so that no handshake made with the old key
            // completes after the sessions are cleared; a session that
            // completed before it is cleared with the rest.
            if let Some(idx) = peer.set_local_key(identity.as_ref().map(|i| &i.secret)) {
                self.indices.remove(idx);
            }
            self.clear_sessions(&peer);
        }
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity().ok().map(|i| i.public)
    }

    /// A copy of the private key, for the root-only control socket that
    /// `wg showconf` reads; wiped when dropped.
    pub fn private_key_bytes(&self) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        self.identity().ok().map(|i| zeroize::Zeroizing::new(*i.secret.as_bytes()))
    }

    /// Whether the private key matches `secret` (compared in constant time).
    pub fn has_private_key(&self, secret: &StaticSecret) -> bool {
        self.identity().is_ok_and(|i| &i.secret == secret)
    }

    pub fn load_monitor(&self) -> &LoadMonitor {
        &self.load
    }

    /// Adds a peer, or returns the existing one with that key.
    pub fn add_peer(
        &self,
        remote: PublicKey,
        psk: Option<PresharedKey>,
        persistent_keepalive: u16,
    ) -> Result<Arc<Peer>, Error> {
        let identity = self.identity().ok();
        if identity.as_ref().is_some_and(|i| i.public == remote) {
            return Err(Error::OwnPublicKey);
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(remote).or_insert_with(|| {
            Arc::new(Peer::new(identity.as_ref().map(|i| &i.secret), remote, psk, persistent_keepalive))
        });
        Ok(peer.clone())
    }

    pub fn remove_peer(&self, remote: &PublicKey) -> Option<Arc<Peer>> {
        let peer = self.peers.write().unwrap_or_else(|e| e.into_inner()).remove(remote)?;
        peer.mark_removed();
        self.indices.remove_peer(&peer);
        peer.kps_mut().take_all();
        peer.clear_handshake();
        Some(peer)
    }

    pub fn peer(&self, remote: &PublicKey) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(remote).cloned()
    }

    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Number of live receiver indices (handshakes and keypairs).
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }

    /// Takes back a session just installed if the private key it was made
    /// with (`made_with`) is no longer ours. `set_private_key` swaps the
    /// key before it clears the sessions, so a session installed after
    /// that clearing is caught here, and one installed before it is
    /// cleared there: none made with the old key survives a change.
    fn drop_if_stale(&self, peer: &Arc<Peer>, made_with: &Arc<Identity>, kp: &Arc<Keypair>) -> Result<(), Error> {
        let current = self.identity.read().unwrap_or_else(|e| e.into_inner()).clone();
        if current.is_some_and(|c| Arc::ptr_eq(&c, made_with)) {
            return Ok(());
        }
        peer.kps_mut().remove(kp);
        self.indices.remove(kp.local_index);
        Err(Error::KeyChanged)
    }

    fn forget(&self, evicted: impl IntoIterator<Item = Arc<Keypair>>) {
        for kp in evicted {
            self.indices.remove(kp.local_index);
        }
    }

    /// Drops every session and the handshake in flight of one peer.
    pub fn clear_sessions(&self, peer: &Arc<Peer>) {
        self.forget_keys(peer);
        peer.timers.reset();
    }

    /// Drops every session of `peer` and the handshake in flight, with
    /// their indices; the timers are the caller's.
    fn forget_keys(&self, peer: &Arc<Peer>) {
        let all = peer.kps_mut().take_all();
        self.forget(all);
        if let Some(idx) = peer.clear_handshake() {
            self.indices.remove(idx);
        }
    }

    /// Builds an initiation to `peer` (at most one per REKEY_TIMEOUT).
    pub fn create_initiation(
        &self,
        peer: &Arc<Peer>,
        now: Time,
        wall: SystemTime,
    ) -> Result<[u8; INITIATION_LEN], Error> {
        let identity = self.identity()?;
        if !peer.initiation_allowed(now) {
            return Err(Error::InitiationTooSoon);
        }
        let idx = self.indices.insert(IndexEntry::Handshake(peer.clone())).ok_or(Error::UnknownPeer)?;
        match peer.create_initiation(&identity.secret, idx, now, wall) {
            Ok((msg, replaced)) => {
                if let Some(old) = replaced {
                    self.indices.remove(old);
                }
                Ok(msg)
            }
            Err(e) => {
                self.indices.remove(idx);
                Err(e)
            }
        }
    }

    /// Seals one packet for `peer`: `buf[16..16 + payload_len]` holds the
    /// plaintext (empty for a keepalive). `NoSession` means: queue it and
    /// start a handshake.
    pub fn seal(
        &self,
        peer: &Peer,
        buf: &mut [u8],
        payload_len: usize,
        mtu: usize,
        now: Time,
    ) -> Result<Sealed, Error> {
        let kp = peer.keypair_for_sending(now)?;
        let len = kp.encrypt(buf, payload_len, mtu)?;
        peer.on_sent(now, len as u64, 1, payload_len > 0);
        Ok(Sealed { len, rekey: peer.needs_rekey_on_send(&kp, now) })
    }

    /// Looks up the keypair a data message is for. Split from `receive` for
    /// the parallel data path: open on any worker, then `accept_data`.
    pub fn data_keypair(&self, msg: &[u8], now: Time) -> Result<(Arc<Peer>, Arc<Keypair>), Error> {
        // `parse` checked this for every caller so far; public, it checks
        // again rather than index past a short slice.
        if msg.len() < messages::DATA_MIN_LEN {
            return Err(Error::InvalidLength);
        }
        let idx = read_u32(msg, messages::data::RECEIVER);
        match self.indices.get(idx) {
            Some(IndexEntry::Keypair(_, kp)) if kp.is_expired(now) => Err(Error::KeypairExpired),
            Some(IndexEntry::Keypair(peer, kp)) => Ok((peer, kp)),
            _ => Err(Error::UnknownReceiverIndex),
        }
    }

    /// After `Keypair::open` succeeded: the replay check, then session
    /// confirmation, timers and counters. Returns whether to rekey.
    pub fn accept_data(
        &self,
        peer: &Peer,
        kp: &Keypair,
        counter: u64,
        wire_len: usize,
        is_data: bool,
        now: Time,
    ) -> Result<bool, Error> {
        kp.accept_counter(counter)?;
        // Steady state takes no lock here: the flag is cleared once the
        // keypair is confirmed (or found not to be `next` any more).
        if kp.awaiting_confirmation() {
            let confirmed = peer.kps_mut().confirm(kp);
            kp.mark_confirmed();
            if let Some(evicted) = confirmed {
                self.forget(evicted);
                peer.on_handshake_complete(kp.created);
            }
        }
        peer.on_received(now, wire_len as u64, is_data);
        // Cheap conditions first; the slot lock only in the last minute of
        // an initiator's session.
        Ok(kp.is_initiator
            && now.saturating_since(kp.created) >= crate::peer::LAST_MINUTE
            && peer.current_keypair().is_some_and(|cur| std::ptr::eq(Arc::as_ptr(&cur), kp))
            && peer.needs_rekey_on_receive(kp, now))
    }

    /// Handles one datagram from `src`, decrypting data in place. Any error
    /// means "drop it"; no error leaves state changed.
    pub fn receive<'a>(&self, src: SocketAddr, packet: &'a mut [u8], now: Time) -> Result<Received<'a>, Error> {
        let kind = match messages::parse(packet)? {
            Message::Initiation(_) => messages::TYPE_INITIATION,
            Message::Response(_) => messages::TYPE_RESPONSE,
            Message::CookieReply(_) => messages::TYPE_COOKIE_REPLY,
            Message::Data(_) => messages::TYPE_DATA,
        };
        match kind {
            messages::TYPE_DATA => self.receive_data(packet, now),
            messages::TYPE_INITIATION => {
                let msg: &[u8; INITIATION_LEN] = (&*packet).try_into().map_err(|_| Error::InvalidLength)?;
                self.receive_initiation(src, msg, now)
            }
            messages::TYPE_RESPONSE => {
                let msg: &[u8; RESPONSE_LEN] = (&*packet).try_into().map_err(|_| Error::InvalidLength)?;
                self.receive_response(src, msg, now)
            }
            _ => {
                let msg: &[u8; COOKIE_REPLY_LEN] = (&*packet).try_into().map_err(|_| Error::InvalidLength)?;
                self.receive_cookie_reply(msg, now)
            }
        }
    }

    fn receive_data<'a>(&self, packet: &'a mut [u8], now: Time) -> Result<Received<'a>, Error> {
        let (peer, kp) = self.data_keypair(packet, now)?;
        let wire_len = packet.len();
        let (counter, plaintext) = kp.open(packet)?;
        let is_data = !plaintext.is_empty();
        let rekey = self.accept_data(&peer, &kp, counter, wire_len, is_data, now)?;
        Ok(if is_data { Received::Data { peer, plaintext, rekey } } else { Received::Keepalive { peer } })
    }

    /// MAC1, then (under load) MAC2 or a cookie reply: the cheap gate in
    /// front of every Diffie-Hellman a stranger can make us compute.
    fn gate(
        &self,
        identity: &Identity,
        src: SocketAddr,
        msg: &[u8],
        sender_index: u32,
        now: Time,
    ) -> Result<Option<Received<'static>>, Error> {
        identity.checker.check_mac1(msg)?;
        if self.load.record(now) {
            let (addr, n) = address_bytes(&src);
            if identity.checker.check_mac2(msg, &addr[..n], now).is_err() {
                return Ok(Some(Received::CookieReply {
                    reply: identity.checker.create_reply(msg, sender_index, &addr[..n], now),
                }));
            }
            // A cookie proves only that the sender owns its address.
            if !self.rate.allow(src.ip(), now) {
                return Err(Error::RateLimited);
            }
        }
        Ok(None)
    }

    fn receive_initiation(
        &self,
        src: SocketAddr,
        msg: &[u8; INITIATION_LEN],
        now: Time,
    ) -> Result<Received<'static>, Error> {
        let identity = self.identity()?;
        if let Some(reply) = self.gate(&identity, src, msg, read_u32(msg, initiation::SENDER), now)? {
            return Ok(reply);
        }
        let partial = consume_initiation_static(&identity.secret, msg)?;
        let peer = self.peer(&partial.remote_static).ok_or(Error::UnknownPeer)?;
        peer.consume_initiation(partial, now)?;
        peer.on_received(now, msg.len() as u64, false);
        let idx = self.indices.insert(IndexEntry::Handshake(peer.clone())).ok_or(Error::UnknownPeer)?;
        let (response, kp, replaced) = match peer.create_response(idx, now) {
            Ok(r) => r,
            Err(e) => {
                self.indices.remove(idx);
                return Err(e);
            }
        };
        if let Some(old) = replaced {
            self.indices.remove(old);
        }
        let kp = Arc::new(kp);
        if !self.indices.replace(idx, IndexEntry::Keypair(peer.clone(), kp.clone())) {
            return Err(Error::UnknownPeer);
        }
        let evicted = peer.kps_mut().install(kp.clone(), None);
        self.forget(evicted);
        self.drop_if_stale(&peer, &identity, &kp)?;
        Ok(Received::HandshakeResponse { peer, response })
    }

    fn receive_response(
        &self,
        src: SocketAddr,
        msg: &[u8; RESPONSE_LEN],
        now: Time,
    ) -> Result<Received<'static>, Error> {
        let identity = self.identity()?;
        if let Some(reply) = self.gate(&identity, src, msg, read_u32(msg, messages::response::SENDER), now)? {
            return Ok(reply);
        }
        let idx = read_u32(msg, messages::response::RECEIVER);
        let peer = match self.indices.get(idx) {
            Some(IndexEntry::Handshake(peer)) => peer,
            _ => return Err(Error::UnknownReceiverIndex),
        };
        let sent = peer.last_initiation_sent();
        let kp = Arc::new(peer.consume_response(msg, &identity.secret, now)?);
        if !self.indices.replace(idx, IndexEntry::Keypair(peer.clone(), kp.clone())) {
            return Err(Error::UnknownPeer);
        }
        // Crossing initiations settle on the lower public key's session
        // (`Keypairs::install_yielding`); the order is the same seen from
        // either end.
        let yields = sent.filter(|_| identity.public.as_bytes() > peer.public_key().as_bytes());
        let evicted = peer.kps_mut().install(kp.clone(), yields);
        self.forget(evicted);
        self.drop_if_stale(&peer, &identity, &kp)?;
        peer.on_received(now, msg.len() as u64, false);
        Ok(Received::SessionEstablished { peer })
    }

    fn receive_cookie_reply(&self, msg: &[u8; COOKIE_REPLY_LEN], now: Time) -> Result<Received<'static>, Error> {
        let peer = match self.indices.get(reply_receiver(msg)) {
            Some(entry) => entry.peer().clone(),
            None => return Err(Error::UnknownReceiverIndex),
        };
        peer.cookies.consume_reply(msg, now)?;
        Ok(Received::CookieStored { peer })
    }

    /// Runs `peer`'s timers. Key erasure and giving up are carried out here;
    /// the action is still returned so the caller can drop queued packets
    /// (GiveUpHandshake) or log. Call repeatedly until `None`.
    pub fn poll_timers(&self, peer: &Arc<Peer>, now: Time) -> Option<TimerAction> {
        let action = peer.timers.poll(now)?;
        match action {
            // The handshake in flight is forgotten with the keys; a series
            // of attempts under way goes on with a new one (`poll` reset
            // the timers that depended on the keys, and kept the series).
            TimerAction::ClearKeys => self.forget_keys(peer),
            TimerAction::GiveUpHandshake => {
                if let Some(idx) = peer.clear_handshake() {
                    self.indices.remove(idx);
                }
            }
            _ => {}
        }
        Some(action)
    }
}
