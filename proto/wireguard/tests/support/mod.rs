//! Test endpoints driven in memory with injected time: a Causeway endpoint
//! built on `Device` (the same glue a gateway needs: queue while
//! handshaking, flush on session, act on timers) and a boringtun endpoint,
//! whose clock is moved in step through mock_instant.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use causeway_wireguard::{Device, Error, Peer, PresharedKey, PublicKey, Received, StaticSecret, Time, TimerAction};

pub const MTU: usize = 1420;

/// Injected time for both implementations: Causeway gets `now`, boringtun's
/// mock clock (thread-local, so tests do not disturb each other) is advanced
/// by the same amount.
pub struct Clock {
    pub now: Time,
}

impl Clock {
    pub fn new() -> Clock {
        // boringtun treats a zero instant as "never"; start one second in.
        mock_instant::MockClock::set_time(Duration::from_secs(1));
        Clock { now: Time::from_secs(1) }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        mock_instant::MockClock::advance(d);
    }

    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(self.now.as_nanos())
    }
}

/// A minimal IPv4/UDP packet carrying `payload` (boringtun only delivers IP).
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Length of the IP packet at the start of `p` (strips WireGuard padding).
pub fn ip_len(p: &[u8]) -> usize {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => u16::from_be_bytes([p[2], p[3]]) as usize,
        Some(6) if p.len() >= 40 => 40 + u16::from_be_bytes([p[4], p[5]]) as usize,
        _ => p.len(),
    }
}

pub fn msg_type(d: &[u8]) -> u8 {
    d[0]
}

pub struct CausewayEnd {
    pub dev: Device,
    pub peer: Arc<Peer>,
    pub addr: SocketAddr,
    pub queued: Vec<Vec<u8>>,
    pub delivered: Vec<Vec<u8>>,
    pub keepalives_received: usize,
    pub sessions_established: usize,
    pub errors: Vec<Error>,
    /// Drops the protocol's requests to rekey (on send and on receive),
    /// to stand for a peer that does not renew the session.
    pub ignore_rekeys: bool,
}

impl CausewayEnd {
    pub fn new(
        secret: StaticSecret,
        remote: PublicKey,
        psk: Option<PresharedKey>,
        keepalive: u16,
        addr: SocketAddr,
    ) -> CausewayEnd {
        let dev = Device::new(Some(secret));
        let peer = dev.add_peer(remote, psk, keepalive).unwrap();
        CausewayEnd {
            dev,
            peer,
            addr,
            queued: vec![],
            delivered: vec![],
            keepalives_received: 0,
            sessions_established: 0,
            errors: vec![],
            ignore_rekeys: false,
        }
    }

    fn initiate(&mut self, clock: &Clock, out: &mut Vec<Vec<u8>>) {
        match self.dev.create_initiation(&self.peer, clock.now, clock.wall()) {
            Ok(m) => out.push(m.to_vec()),
            Err(Error::InitiationTooSoon) => {}
            Err(e) => panic!("initiation failed: {e}"),
        }
    }

    fn seal(&mut self, packet: &[u8], clock: &Clock, out: &mut Vec<Vec<u8>>) -> Result<(), Error> {
        let mut buf = vec![0u8; packet.len() + 64];
        buf[16..16 + packet.len()].copy_from_slice(packet);
        let sealed = self.dev.seal(&self.peer, &mut buf, packet.len(), MTU, clock.now)?;
        buf.truncate(sealed.len);
        out.push(buf);
        if sealed.rekey && !self.ignore_rekeys {
            self.initiate(clock, out);
        }
        Ok(())
    }

    /// An IP packet from the tunnel interface: datagrams to send.
    pub fn send(&mut self, packet: &[u8], clock: &Clock) -> Vec<Vec<u8>> {
        let mut out = vec![];
        match self.seal(packet, clock, &mut out) {
            Ok(()) => {}
            Err(Error::NoSession) => {
                self.queued.push(packet.to_vec());
                self.initiate(clock, &mut out);
            }
            Err(e) => panic!("seal failed: {e}"),
        }
        out
    }

    fn flush(&mut self, clock: &Clock, out: &mut Vec<Vec<u8>>) {
        if self.queued.is_empty() || self.peer.keypair_for_sending(clock.now).is_err() {
            return;
        }
        for p in std::mem::take(&mut self.queued) {
            self.seal(&p, clock, out).unwrap();
        }
    }

    /// A datagram from the network: datagrams to send back. Errors are
    /// recorded and returned, as a gateway would count them.
    pub fn receive(&mut self, datagram: &[u8], from: SocketAddr, clock: &Clock) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = vec![];
        let mut buf = datagram.to_vec();
        let r = self.dev.receive(from, &mut buf, clock.now);
        match r {
            Ok(Received::HandshakeResponse { response, .. }) => out.push(response.to_vec()),
            Ok(Received::CookieReply { reply }) => out.push(reply.to_vec()),
            Ok(Received::SessionEstablished { .. }) => {
                self.sessions_established += 1;
                if self.queued.is_empty() {
                    self.seal(&[], clock, &mut out).unwrap();
                } else {
                    self.flush(clock, &mut out);
                }
            }
            Ok(Received::CookieStored { .. }) => {}
            Ok(Received::Data { plaintext, rekey, .. }) => {
                let n = ip_len(plaintext);
                self.delivered.push(plaintext[..n].to_vec());
                if rekey && !self.ignore_rekeys {
                    self.initiate(clock, &mut out);
                }
                self.flush(clock, &mut out);
            }
            Ok(Received::Keepalive { .. }) => {
                self.keepalives_received += 1;
                self.flush(clock, &mut out);
            }
            Err(e) => {
                self.errors.push(e);
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Runs the timers: datagrams to send.
    pub fn tick(&mut self, clock: &Clock) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(action) = self.dev.poll_timers(&self.peer, clock.now) {
            match action {
                TimerAction::SendKeepalive => {
                    if self.seal(&[], clock, &mut out).is_err() {
                        self.initiate(clock, &mut out);
                    }
                }
                TimerAction::InitiateHandshake | TimerAction::RetryHandshake => self.initiate(clock, &mut out),
                TimerAction::GiveUpHandshake => self.queued.clear(),
                TimerAction::ClearKeys => {}
            }
        }
        out
    }
}

pub struct BoringEnd {
    pub tunn: boringtun::noise::Tunn,
    pub addr: SocketAddr,
    pub delivered: Vec<Vec<u8>>,
    pub errors: Vec<String>,
}

pub fn dalek_secret(s: &StaticSecret) -> boringtun::x25519::StaticSecret {
    boringtun::x25519::StaticSecret::from(*s.as_bytes())
}

pub fn dalek_public(p: &PublicKey) -> boringtun::x25519::PublicKey {
    boringtun::x25519::PublicKey::from(*p.as_bytes())
}

impl BoringEnd {
    pub fn new(
        secret: &StaticSecret,
        remote: &PublicKey,
        psk: Option<&PresharedKey>,
        keepalive: Option<u16>,
        rate_limit: Option<u64>,
        addr: SocketAddr,
    ) -> BoringEnd {
        let limiter = rate_limit.map(|limit| {
            Arc::new(boringtun::noise::rate_limiter::RateLimiter::new(
                &boringtun::x25519::PublicKey::from(&dalek_secret(secret)),
                limit,
            ))
        });
        let tunn = boringtun::noise::Tunn::new(
            dalek_secret(secret),
            dalek_public(remote),
            psk.map(|p| *p.as_bytes()),
            keepalive,
            7,
            limiter,
        );
        BoringEnd { tunn, addr, delivered: vec![], errors: vec![] }
    }

    pub fn send(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut dst = vec![0u8; packet.len() + 256];
        match self.tunn.encapsulate(packet, &mut dst) {
            boringtun::noise::TunnResult::WriteToNetwork(d) => vec![d.to_vec()],
            boringtun::noise::TunnResult::Done => vec![],
            other => panic!("boringtun encapsulate: {other:?}"),
        }
    }

    pub fn receive(&mut self, datagram: &[u8], from: SocketAddr) -> Vec<Vec<u8>> {
        use boringtun::noise::TunnResult;
        let mut out = vec![];
        let mut dst = vec![0u8; 65536];
        let mut input = datagram.to_vec();
        loop {
            match self.tunn.decapsulate(Some(from.ip()), &input, &mut dst) {
                TunnResult::WriteToNetwork(d) => out.push(d.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    self.delivered.push(p.to_vec());
                    break;
                }
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    self.errors.push(format!("{e:?}"));
                    break;
                }
            }
            // A handshake or cookie reply may release queued packets: boringtun
            // wants repeated calls with an empty datagram until Done.
            input.clear();
        }
        out
    }

    pub fn tick(&mut self) -> Vec<Vec<u8>> {
        let mut dst = vec![0u8; 2048];
        match self.tunn.update_timers(&mut dst) {
            boringtun::noise::TunnResult::WriteToNetwork(d) => vec![d.to_vec()],
            _ => vec![],
        }
    }
}

/// Anything that exchanges datagrams, so `pump` can shuttle between any pair.
pub trait Endpoint {
    fn addr(&self) -> SocketAddr;
    fn deliver(&mut self, datagram: &[u8], from: SocketAddr, clock: &Clock) -> Vec<Vec<u8>>;
}

impl Endpoint for CausewayEnd {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn deliver(&mut self, datagram: &[u8], from: SocketAddr, clock: &Clock) -> Vec<Vec<u8>> {
        self.receive(datagram, from, clock).unwrap_or_default()
    }
}

impl Endpoint for BoringEnd {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn deliver(&mut self, datagram: &[u8], from: SocketAddr, _clock: &Clock) -> Vec<Vec<u8>> {
        self.receive(datagram, from)
    }
}

/// Delivers `from_a` to b, b's answers to a, and so on until both are quiet.
/// Returns the number of datagrams moved.
pub fn pump(a: &mut impl Endpoint, b: &mut impl Endpoint, from_a: Vec<Vec<u8>>, clock: &Clock) -> usize {
    let mut to_b = from_a;
    let mut to_a: Vec<Vec<u8>> = vec![];
    let mut moved = 0;
    for _ in 0..100 {
        if to_a.is_empty() && to_b.is_empty() {
            return moved;
        }
        for d in std::mem::take(&mut to_b) {
            moved += 1;
            to_a.extend(b.deliver(&d, a.addr(), clock));
        }
        for d in std::mem::take(&mut to_a) {
            moved += 1;
            to_b.extend(a.deliver(&d, b.addr(), clock));
        }
    }
    panic!("endpoints never went quiet");
}

pub fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)), 51820)
}
