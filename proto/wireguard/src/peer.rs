//! One remote peer's protocol state: handshake, keypair slots, cookie state,
//! timers and counters.
//!
//! Locking: `handshake` and `keypairs` are separate short mutexes; neither is
//! held across transport AEAD. Sending clones the current keypair's `Arc`
//! under a read lock and seals outside it. The order, when both are taken,
//! is handshake then keypairs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::handshake::{self, HandshakeState, InitiatorState, PartialInitiation};
use crate::messages::{INITIATION_LEN, RESPONSE_LEN};
use crate::{
    CookieGenerator, Error, Keypair, PresharedKey, PublicKey, StaticSecret, Tai64N, Time, Timers,
    INITIATIONS_PER_SECOND, KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME, REKEY_TIMEOUT,
};

/// Age at which an initiator's session that only receives asks for a new
/// handshake: REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT (165 s).
pub(crate) const LAST_MINUTE: Duration =
    Duration::from_secs(REJECT_AFTER_TIME.as_secs() - KEEPALIVE_TIMEOUT.as_secs() - REKEY_TIMEOUT.as_secs());

/// Age at which a responder's session that sends asks for a new handshake:
/// REJECT_AFTER_TIME - 2 * REKEY_TIMEOUT (170 s). The protocol leaves
/// rekeying to the initiator, and one that sends or receives has started
/// by LAST_MINUTE at the latest; but both ends can send on responder
/// sessions (each confirmed the other's session of a crossing, which
/// stock peers do too), and then neither renews and sending stops at
/// REJECT_AFTER_TIME until a new handshake. Later than LAST_MINUTE, so a
/// live initiator goes first (answering it holds ours back for
/// REKEY_TIMEOUT), and early enough for one retry before expiry.
pub(crate) const RESPONDER_LAST_RESORT: Duration =
    Duration::from_secs(REJECT_AFTER_TIME.as_secs() - 2 * REKEY_TIMEOUT.as_secs());

/// Slots of a peer's sessions (whitepaper section 6.1): `current` sends,
/// `previous` still receives packets in flight across a rekey, `next` is a
/// responder's new session that becomes current once the initiator has
/// proven it holds the keys by sending data with it.
#[derive(Default)]
pub(crate) struct Keypairs {
    pub(crate) current: Option<Arc<Keypair>>,
    pub(crate) previous: Option<Arc<Keypair>>,
    pub(crate) next: Option<Arc<Keypair>>,
}

impl Keypairs {
    /// Installs a new session; returns the keypairs that fell out of every
    /// slot. `yields` is set for an initiator's session when the peer's
    /// initiation may have crossed ours and the tie is the peer's (its
    /// public key is the lower), with the time ours was sent: see
    /// `install_yielding`.
    pub(crate) fn install(&mut self, kp: Arc<Keypair>, yields: Option<Time>) -> Vec<Arc<Keypair>> {
        if let (true, Some(sent)) = (kp.is_initiator, yields) {
            if let Some(evicted) = self.install_yielding(&kp, sent) {
                return evicted;
            }
        }
        let mut evicted = Vec::new();
        if kp.is_initiator {
            // A next keypair we never confirmed moves to previous so that
            // data the other side already sent with it still decrypts;
            // unless it is one a crossing left behind: older than current
            // (only `install_yielding` puts a session in current over a
            // waiting next) and unconfirmed for longer than REKEY_TIMEOUT
            // (its initiator confirms a session at once, with data or a
            // keepalive). That is a stock peer's session of a crossing we
            // yielded, dropped for ours; moved to previous, it would take
            // the place of current, which the peer still sends on.
            let abandoned = |next: &Keypair| {
                self.current.as_ref().is_some_and(|c| next.created < c.created)
                    && kp.created.saturating_since(next.created) > REKEY_TIMEOUT
            };
            match self.next.take() {
                Some(next) if !abandoned(&next) => {
                    evicted.extend(self.previous.replace(next));
                    evicted.extend(self.current.take());
                }
                abandoned => {
                    evicted.extend(abandoned);
                    evicted.extend(self.previous.take());
                    self.previous = self.current.take();
                }
            }
            self.current = Some(kp);
        } else {
            evicted.extend(self.next.replace(kp));
            evicted.extend(self.previous.take());
        }
        evicted
    }

    /// Our session, initiated at `sent`, completing while the peer's
    /// crossing session exists (both ends initiated at once). Each end
    /// holds both sessions; left alone, each sends on its own initiator
    /// session, which the other holds only in `previous`, and the next
    /// rekey drops that slot with packets still in flight on it. So both
    /// ends settle on the session the peer with the lower public key
    /// initiated. Here, on the end that yields: the peer's session, if it
    /// is still `next`, stays there to take over once the peer's data
    /// proves it (a stock peer, which dropped its initiation for ours,
    /// never completes it, and then ours stays current); if it is current
    /// already, ours only receives. The other end installs as usual. None
    /// when nothing crossed: the usual install applies. Not covered: an
    /// order in which each end's first data confirms the other's session
    /// before its own completes still leaves the two on different sessions
    /// (the yielding end would have to take its own back when the peer
    /// sends on it, which reordered packets make unsafe to infer).
    fn install_yielding(&mut self, kp: &Arc<Keypair>, sent: Time) -> Option<Vec<Arc<Keypair>>> {
        let mut evicted = Vec::new();
        // Only a session answered while ours was out crossed it; one from
        // before (we retried meanwhile) is replaced as usual.
        if self.next.as_ref().is_some_and(|n| n.created >= sent) {
            evicted.extend(self.previous.take());
            self.previous = self.current.replace(kp.clone());
            return Some(evicted);
        }
        let crossed = self.current.as_ref().is_some_and(|c| !c.is_initiator && c.created >= sent);
        if !crossed {
            return None;
        }
        evicted.extend(self.previous.replace(kp.clone()));
        Some(evicted)
    }

    /// Called when data arrived on `kp`: if it is the unconfirmed `next`,
    /// it becomes current. Returns what fell out, or None if nothing moved.
    pub(crate) fn confirm(&mut self, kp: &Keypair) -> Option<Vec<Arc<Keypair>>> {
        if !self.next.as_ref().is_some_and(|n| std::ptr::eq(Arc::as_ptr(n), kp)) {
            return None;
        }
        let next = self.next.take();
        let mut evicted = Vec::new();
        evicted.extend(self.previous.take());
        self.previous = self.current.take();
        self.current = next;
        Some(evicted)
    }

    /// Takes `kp` out of whichever slot holds it.
    pub(crate) fn remove(&mut self, kp: &Arc<Keypair>) {
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, kp)) {
                *slot = None;
            }
        }
    }

    pub(crate) fn take_all(&mut self) -> Vec<Arc<Keypair>> {
        [self.current.take(), self.previous.take(), self.next.take()].into_iter().flatten().collect()
    }
}

impl HandshakeSlot {
    /// Forgets the handshake in flight, our kept initiation included;
    /// returns its index for removal.
    fn drop_handshake(&mut self) -> Option<u32> {
        let kept = self.kept_initiation.take().map(|k| k.local_index);
        let idx = self.state.initiation_index().or(kept);
        self.state = HandshakeState::None;
        idx
    }
}

pub(crate) struct HandshakeSlot {
    pub(crate) state: HandshakeState,
    /// Our own initiation, kept while we answer the peer's: when both ends
    /// initiate at once (both restarted together), each answers the other
    /// and still completes its own, so a session exists after one round
    /// trip instead of both ending as unconfirmed responders that wait out
    /// REKEY_TIMEOUT. A stock peer that drops its own initiation instead
    /// still gets ours answered, so the wire behaviour stays compatible.
    kept_initiation: Option<InitiatorState>,
    /// DH(our static, peer static), or the reason there is none (low order).
    static_static: Result<Zeroizing<[u8; 32]>, Error>,
    psk: PresharedKey,
    /// Newest initiation timestamp accepted from this peer.
    latest_timestamp: Option<Tai64N>,
    last_initiation_consumed: Option<Time>,
    last_initiation_sent: Option<Time>,
    /// When we last answered an initiation: a new series of our own waits
    /// REKEY_TIMEOUT after it, as in wireguard-go and the kernel, since the
    /// peer's confirmation of that session is on its way.
    last_response_sent: Option<Time>,
}

/// Counters for status output, `wg show` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Handshakes completed with this peer.
    pub handshakes: u64,
    pub last_handshake: Option<Time>,
}

pub struct Peer {
    remote: PublicKey,
    pub(crate) handshake: Mutex<HandshakeSlot>,
    pub(crate) keypairs: RwLock<Keypairs>,
    pub(crate) cookies: CookieGenerator,
    pub timers: Timers,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    handshakes: AtomicU64,
    /// `nanos + 1` of the last completed handshake; 0 when none.
    last_handshake: AtomicU64,
    /// Set once the receive-side "last minute" rekey was requested for the
    /// current session, so it is requested once, as in the kernel.
    sent_lastminute_handshake: AtomicBool,
    /// Set by `Device::remove_peer` before it clears the peer's indices;
    /// the index table refuses new entries for such a peer (`index.rs`).
    removed: AtomicBool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("public_key", &self.remote).finish_non_exhaustive()
    }
}

impl Peer {
    pub(crate) fn new(
        local: Option<&StaticSecret>,
        remote: PublicKey,
        psk: Option<PresharedKey>,
        keepalive: u16,
    ) -> Peer {
        Peer {
            remote,
            handshake: Mutex::new(HandshakeSlot {
                state: HandshakeState::None,
                kept_initiation: None,
                static_static: Self::static_static(local, &remote),
                psk: psk.unwrap_or_default(),
                latest_timestamp: None,
                last_initiation_consumed: None,
                last_initiation_sent: None,
                last_response_sent: None,
            }),
            keypairs: RwLock::default(),
            cookies: CookieGenerator::new(&remote),
            timers: Timers::new(keepalive),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            last_handshake: AtomicU64::new(0),
            sent_lastminute_handshake: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    fn static_static(local: Option<&StaticSecret>, remote: &PublicKey) -> Result<Zeroizing<[u8; 32]>, Error> {
        local.ok_or(Error::NoPrivateKey)?.diffie_hellman(remote)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.remote
    }

    pub(crate) fn hs(&self) -> std::sync::MutexGuard<'_, HandshakeSlot> {
        self.handshake.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kps(&self) -> std::sync::RwLockReadGuard<'_, Keypairs> {
        self.keypairs.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kps_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keypairs> {
        self.keypairs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes what depends on our private key (after it changed).
    /// Takes our new static key; the handshake in flight, made with the
    /// old one, is dropped in the same critical section, and its index
    /// returned for removal (else an initiation started just before would
    /// keep its index).
    pub(crate) fn set_local_key(&self, local: Option<&StaticSecret>) -> Option<u32> {
        let mut hs = self.hs();
        hs.static_static = Self::static_static(local, &self.remote);
        hs.drop_handshake()
    }

    pub fn set_preshared_key(&self, psk: Option<PresharedKey>) {
        self.hs().psk = psk.unwrap_or_default();
    }

    pub fn preshared_key(&self) -> PresharedKey {
        self.hs().psk.clone()
    }

    /// Whether a handshake with this peer is possible at all (false for a
    /// low-order public key, or when the interface has no private key).
    pub fn can_handshake(&self) -> bool {
        self.hs().static_static.is_ok()
    }

    pub fn stats(&self) -> PeerStats {
        let lh = self.last_handshake.load(Ordering::Relaxed);
        PeerStats {
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            last_handshake: lh.checked_sub(1).map(Time::from_nanos),
        }
    }

    /// Whether an initiation may be sent now: at most one per REKEY_TIMEOUT,
    /// and none within REKEY_TIMEOUT of a response we sent (`create_initiation`).
    pub fn initiation_allowed(&self, now: Time) -> bool {
        let hs = self.hs();
        let past = |t: Option<Time>| t.is_none_or(|t| now.saturating_since(t) >= REKEY_TIMEOUT);
        past(hs.last_initiation_sent) && past(hs.last_response_sent)
    }

    pub fn handshake_in_flight(&self) -> bool {
        !self.hs().state.is_none()
    }

    pub fn current_keypair(&self) -> Option<Arc<Keypair>> {
        self.kps().current.clone()
    }

    /// Whether a cookie from this peer is held and fresh (it was under load).
    pub fn has_fresh_cookie(&self, now: Time) -> bool {
        self.cookies.has_fresh_cookie(now)
    }

    pub fn has_next_keypair(&self) -> bool {
        self.kps().next.is_some()
    }

    /// The keypair to seal with now, or `NoSession` when the caller must
    /// queue the packet and start a handshake.
    pub fn keypair_for_sending(&self, now: Time) -> Result<Arc<Keypair>, Error> {
        match self.kps().current.as_ref() {
            Some(kp) if !kp.is_expired(now) && kp.next_counter() < REJECT_AFTER_MESSAGES => Ok(kp.clone()),
            _ => Err(Error::NoSession),
        }
    }

    /// Whether sending on `kp` should start a new handshake: either end
    /// after REKEY_AFTER_MESSAGES (wireguard-go's keepKeyFreshSending, the
    /// kernel's keep_key_fresh), the initiator after REKEY_AFTER_TIME, the
    /// responder by age only as a last resort (RESPONDER_LAST_RESORT).
    pub fn needs_rekey_on_send(&self, kp: &Keypair, now: Time) -> bool {
        let age = now.saturating_since(kp.created);
        kp.next_counter() >= REKEY_AFTER_MESSAGES
            || age >= if kp.is_initiator { REKEY_AFTER_TIME } else { RESPONDER_LAST_RESORT }
    }

    /// Whether receiving on the current session should start a handshake:
    /// the initiator's session is about to hit REJECT_AFTER_TIME and the
    /// send-side rekey did not happen (nothing was sent). Fires once per session.
    pub(crate) fn needs_rekey_on_receive(&self, kp: &Keypair, now: Time) -> bool {
        kp.is_initiator
            && now.saturating_since(kp.created) >= LAST_MINUTE
            && !self.sent_lastminute_handshake.swap(true, Ordering::Relaxed)
    }

    /// Records `packets` authenticated messages we sent, `wire_bytes` in
    /// total, of which some carried data (not only keepalives or handshakes).
    pub fn on_sent(&self, now: Time, wire_bytes: u64, packets: u64, is_data: bool) {
        self.tx_bytes.fetch_add(wire_bytes, Ordering::Relaxed);
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.timers.on_authenticated_packet_sent(now);
        if is_data {
            self.timers.on_data_sent(now);
        }
    }

    pub(crate) fn on_received(&self, now: Time, wire_len: u64, is_data: bool) {
        self.rx_bytes.fetch_add(wire_len, Ordering::Relaxed);
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.timers.on_authenticated_packet_received(now);
        if is_data {
            self.timers.on_data_received(now);
        }
    }

    pub(crate) fn on_handshake_complete(&self, now: Time) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        self.timers.on_handshake_complete();
        self.last_handshake.store(now.as_nanos() + 1, Ordering::Relaxed);
        self.sent_lastminute_handshake.store(false, Ordering::Relaxed);
    }

    /// Builds an initiation (MACs included) for the given local index.
    pub(crate) fn create_initiation(
        &self,
        local: &StaticSecret,
        local_index: u32,
        now: Time,
        wall: SystemTime,
    ) -> Result<([u8; INITIATION_LEN], Option<u32>), Error> {
        let mut hs = self.hs();
        let recent = |t: Option<Time>| t.is_some_and(|t| now.saturating_since(t) < REKEY_TIMEOUT);
        // A response we sent holds back retries too, as wireguard-go's
        // lastSentHandshake and the kernel's last_sent_handshake do: the
        // handshake we answered gives the peer a session, and ours would
        // only make a second one. Unlike wireguard-go, whose series ends
        // at a retry held back, the retry timer stays armed (`Timers::poll`
        // re-arms it), so the series goes on if that session never comes.
        let retry = self.timers.handshake_in_progress();
        if recent(hs.last_initiation_sent) || recent(hs.last_response_sent) {
            return Err(Error::InitiationTooSoon);
        }
        let ss = hs.static_static.as_ref().map_err(|e| *e)?;
        let (mut msg, state) = handshake::create_initiation(local, &self.remote, ss, local_index, wall)?;
        // A kept initiation is superseded by this one, like one in flight.
        let kept = hs.kept_initiation.take().map(|k| k.local_index);
        let replaced = hs.state.initiation_index().or(kept);
        hs.state = HandshakeState::InitiationSent(state);
        hs.last_initiation_sent = Some(now);
        drop(hs);
        self.cookies.add_macs(&mut msg, now);
        self.timers.on_handshake_initiated(now, retry);
        self.on_sent(now, INITIATION_LEN as u64, 1, false);
        Ok((msg, replaced))
    }

    /// Authenticates an initiation against this peer and records it. Nothing
    /// changes unless the initiation is valid, newer than the last one, and
    /// not part of a flood.
    pub(crate) fn consume_initiation(&self, partial: PartialInitiation, now: Time) -> Result<(), Error> {
        let mut hs = self.hs();
        let ss = hs.static_static.as_ref().map_err(|e| *e)?;
        let (ts, state) = handshake::consume_initiation_finish(partial, ss)?;
        if hs.latest_timestamp.is_some_and(|latest| ts <= latest) {
            return Err(Error::ReplayedInitiation);
        }
        let min_gap = Duration::from_nanos(1_000_000_000 / INITIATIONS_PER_SECOND);
        if hs.last_initiation_consumed.is_some_and(|t| now.saturating_since(t) < min_gap) {
            return Err(Error::InitiationFlood);
        }
        hs.latest_timestamp = Some(ts);
        hs.last_initiation_consumed = Some(now);
        if let HandshakeState::InitiationSent(ours) = std::mem::take(&mut hs.state) {
            hs.kept_initiation = Some(ours);
        }
        hs.state = HandshakeState::InitiationConsumed(state);
        Ok(())
    }

    /// Answers the consumed initiation: returns the response (MACs included)
    /// and the new keypair, and the index of an initiation of ours it replaced.
    pub(crate) fn create_response(
        &self,
        local_index: u32,
        now: Time,
    ) -> Result<([u8; RESPONSE_LEN], Keypair, Option<u32>), Error> {
        let mut hs = self.hs();
        let replaced = hs.state.initiation_index();
        let state = match std::mem::take(&mut hs.state) {
            HandshakeState::InitiationConsumed(s) => s,
            other => {
                hs.state = other;
                return Err(Error::UnexpectedResponse);
            }
        };
        let (mut msg, kp) = handshake::create_response(state, &self.remote, &hs.psk, local_index, now)?;
        hs.last_response_sent = Some(now);
        if let Some(ours) = hs.kept_initiation.take() {
            hs.state = HandshakeState::InitiationSent(ours);
        }
        drop(hs);
        self.cookies.add_macs(&mut msg, now);
        self.timers.on_session_derived(now);
        self.on_sent(now, RESPONSE_LEN as u64, 1, false);
        Ok((msg, kp, replaced))
    }

    /// Consumes a response to our initiation; on success the handshake slot
    /// is cleared and the initiator's keypair returned.
    pub(crate) fn consume_response(
        &self,
        msg: &[u8; RESPONSE_LEN],
        local: &StaticSecret,
        now: Time,
    ) -> Result<Keypair, Error> {
        let mut hs = self.hs();
        let kp = match (&hs.state, hs.kept_initiation.as_ref()) {
            (HandshakeState::InitiationSent(s), _) | (_, Some(s)) => {
                handshake::consume_response(s, msg, local, &hs.psk, now)?
            }
            _ => return Err(Error::UnexpectedResponse),
        };
        if hs.state.initiation_index().is_some() {
            hs.state = HandshakeState::None;
        } else {
            hs.kept_initiation = None;
        }
        drop(hs);
        self.timers.on_session_derived(now);
        self.on_handshake_complete(now);
        Ok(kp)
    }

    /// When our latest initiation was sent.
    pub(crate) fn last_initiation_sent(&self) -> Option<Time> {
        self.hs().last_initiation_sent
    }

    /// Forgets the handshake in flight; returns its index for removal.
    pub(crate) fn clear_handshake(&self) -> Option<u32> {
        self.hs().drop_handshake()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keypairs {
        fn install_plain(&mut self, kp: Arc<Keypair>) -> Vec<Arc<Keypair>> {
            self.install(kp, None)
        }
    }

    fn kp(idx: u32, initiator: bool) -> Arc<Keypair> {
        kp_at(idx, initiator, Time::ZERO)
    }

    fn kp_at(idx: u32, initiator: bool, created: Time) -> Arc<Keypair> {
        Arc::new(Keypair::new(&[1; 32], &[2; 32], idx, idx + 100, created, initiator))
    }

    fn slots(k: &Keypairs) -> [Option<u32>; 3] {
        [&k.current, &k.previous, &k.next].map(|s| s.as_ref().map(|k| k.local_index))
    }

    #[test]
    fn either_end_rekeys_after_rekey_after_messages() {
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let peer = Peer::new(Some(&secret), StaticSecret::random(&mut rand_core::OsRng).public_key(), None, 0);
        for initiator in [true, false] {
            let k = kp(1, initiator);
            k.reserve(REKEY_AFTER_MESSAGES - 1).unwrap();
            assert!(!peer.needs_rekey_on_send(&k, Time::ZERO), "initiator {initiator}: one short");
            k.reserve(1).unwrap();
            assert!(peer.needs_rekey_on_send(&k, Time::ZERO), "initiator {initiator}");
        }
    }

    #[test]
    fn initiator_sessions_rotate_current_to_previous() {
        let mut k = Keypairs::default();
        assert!(k.install_plain(kp(1, true)).is_empty());
        assert_eq!(slots(&k), [Some(1), None, None]);
        assert!(k.install_plain(kp(2, true)).is_empty());
        assert_eq!(slots(&k), [Some(2), Some(1), None]);
        let ev = k.install_plain(kp(3, true));
        assert_eq!(ev.iter().map(|k| k.local_index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(slots(&k), [Some(3), Some(2), None]);
    }

    #[test]
    fn responder_session_waits_in_next_until_confirmed() {
        let mut k = Keypairs::default();
        k.install_plain(kp(1, true));
        k.install_plain(kp(2, true));
        let ev = k.install_plain(kp(3, false));
        assert_eq!(ev.iter().map(|k| k.local_index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(slots(&k), [Some(2), None, Some(3)]);
        let other = kp(9, false);
        assert!(k.confirm(&other).is_none());
        let next = k.next.clone().unwrap();
        assert!(k.confirm(&next).unwrap().is_empty());
        assert_eq!(slots(&k), [Some(3), Some(2), None]);
    }

    #[test]
    fn initiator_session_over_an_unconfirmed_next() {
        let mut k = Keypairs::default();
        k.install_plain(kp(1, true));
        k.install_plain(kp(2, false));
        let ev = k.install_plain(kp(3, true));
        assert_eq!(ev.iter().map(|k| k.local_index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(slots(&k), [Some(3), Some(2), None]);
        assert_eq!(k.take_all().len(), 2);
    }

    // We yielded a crossing to a stock peer, which dropped its initiation
    // for ours: its session stays unconfirmed in next. At our next rekey it
    // is dropped, and our session, which the peer still sends on, stays
    // in previous for its packets in flight.
    #[test]
    fn a_crossing_session_the_peer_abandoned_does_not_push_current_out_at_the_next_rekey() {
        let at = |ms: u64| Time::ZERO + Duration::from_millis(ms);
        let mut k = Keypairs::default();
        k.install_plain(kp_at(1, true, at(0)));
        k.install_plain(kp_at(2, false, at(10_000)));
        assert!(k.install(kp_at(3, true, at(10_050)), Some(at(9_990))).is_empty());
        assert_eq!(slots(&k), [Some(3), Some(1), Some(2)], "yielded: the peer's session waits in next");
        let ev = k.install(kp_at(4, true, at(130_050)), Some(at(130_000)));
        assert_eq!(ev.iter().map(|k| k.local_index).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(slots(&k), [Some(4), Some(3), None]);
    }

    // A responder session whose confirmation was lost waits in next for as
    // long as the peer is quiet; our rekey moves it to previous, as the
    // kernel does, since the peer sends on it.
    #[test]
    fn a_responder_session_waiting_for_its_confirmation_moves_to_previous_at_our_rekey() {
        let at = |ms: u64| Time::ZERO + Duration::from_millis(ms);
        let mut k = Keypairs::default();
        k.install_plain(kp_at(1, true, at(0)));
        k.install_plain(kp_at(2, false, at(10_000)));
        let ev = k.install_plain(kp_at(3, true, at(60_000)));
        assert_eq!(ev.iter().map(|k| k.local_index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(slots(&k), [Some(3), Some(2), None]);
    }
}
