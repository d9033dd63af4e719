//! The in-memory network of the endpoint tests: two endpoints, A at
//! 198.18.0.1 and B at 198.18.0.2, an optional NAT in front of A, a filter
//! that can drop datagrams, and a clock moved only by the test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::crypto::{DhGroup, EncrAlg, IkeSuite, IntegAlg, PrfAlg};
use crate::{Endpoint, EspCipher, EspProposal, Event, Identity, PeerConfig, PeerId, TrafficSelector, Transmit};

/// A deterministic generator (xorshift64*), different per seed.
pub(crate) struct TestRng(pub u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

pub(crate) const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
pub(crate) const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
/// The NAT's public address, in front of A when enabled.
pub(crate) const NAT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));

pub(crate) fn gcm256_x25519() -> IkeSuite {
    IkeSuite {
        encr: EncrAlg::AesGcm16 { key_bits: 256 },
        prf: PrfAlg::HmacSha256,
        integ: None,
        dh: DhGroup::Curve25519,
    }
}

pub(crate) fn cbc256_modp2048() -> IkeSuite {
    IkeSuite {
        encr: EncrAlg::AesCbc { key_bits: 256 },
        prf: PrfAlg::HmacSha256,
        integ: Some(IntegAlg::HmacSha256_128),
        dh: DhGroup::Modp2048,
    }
}

pub(crate) fn esp(cipher: EspCipher) -> EspProposal {
    EspProposal { cipher, dh: None, esn: false }
}

pub(crate) fn net(s: &str, len: u8) -> TrafficSelector {
    TrafficSelector::subnet(s.parse().expect("test address"), len)
}

/// A's configuration for B; `responder` flips it into B's for A.
pub(crate) fn config_a() -> PeerConfig {
    PeerConfig {
        local_id: Identity::Fqdn("a.test".into()),
        remote_id: Identity::Fqdn("b.test".into()),
        psk: Zeroizing::new(b"a shared key of the test".to_vec()),
        ike_proposals: vec![gcm256_x25519()],
        esp_proposals: vec![esp(EspCipher::AesGcm16 { key_bits: 256 })],
        local_ts: vec![net("10.1.0.0", 16)],
        remote_ts: vec![net("10.2.0.0", 16)],
        remote_addrs: vec![B_IP],
        any_address: false,
        ike_lifetime: Duration::from_secs(3600),
        child_lifetime: Duration::from_secs(1200),
        rekey_jitter_percent: 10,
        dpd_interval: Duration::ZERO,
        initiate: true,
        encap_always: false,
    }
}

/// The mirror of a configuration: B's view of A.
pub(crate) fn mirror(a: &PeerConfig) -> PeerConfig {
    let mut b = a.clone();
    std::mem::swap(&mut b.local_id, &mut b.remote_id);
    std::mem::swap(&mut b.local_ts, &mut b.remote_ts);
    b.remote_addrs = vec![A_IP];
    b.initiate = false;
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

/// Decides whether a datagram is lost.
pub(crate) type DropFilter = Box<dyn FnMut(Side, &Transmit) -> bool>;

pub(crate) struct Net {
    pub a: Endpoint,
    pub b: Endpoint,
    pub now: Instant,
    pub events_a: Vec<Event>,
    pub events_b: Vec<Event>,
    /// Every datagram sent, by sender, in order.
    pub log: Vec<(Side, Transmit)>,
    /// Returns `true` to drop a datagram.
    pub drop: DropFilter,
    /// A's datagrams leave through a NAT (source address and port rewritten).
    pub nat: bool,
}

pub(crate) fn peer_a() -> PeerId {
    PeerId::from("a")
}

pub(crate) fn peer_b() -> PeerId {
    PeerId::from("b")
}

impl Net {
    /// Endpoints configured with `cfg_a` (A's view of B) and `cfg_b`.
    pub(crate) fn new(cfg_a: PeerConfig, cfg_b: PeerConfig) -> Net {
        let now = Instant::now();
        let mut a = Endpoint::new(Box::new(TestRng(0x1234_5678_9abc_def1)));
        let mut b = Endpoint::new(Box::new(TestRng(0x0fed_cba9_8765_4321)));
        a.set_peer(peer_b(), cfg_a, now);
        b.set_peer(peer_a(), cfg_b, now);
        Net {
            a,
            b,
            now,
            events_a: Vec::new(),
            events_b: Vec::new(),
            log: Vec::new(),
            drop: Box::new(|_, _| false),
            nat: false,
        }
    }

    /// A, configured with `cfg_a`, behind a NAT that B sees it through,
    /// connected to B.
    pub(crate) fn connected_through_nat(cfg_a: PeerConfig) -> Net {
        let mut cfg_b = mirror(&cfg_a);
        cfg_b.remote_addrs = vec![NAT_IP];
        let mut n = Net::new(cfg_a, cfg_b);
        n.nat = true;
        n.connect();
        n
    }

    /// A starts the IKE SA and the network runs until quiet, through a new
    /// IKE_SA_INIT a COOKIE or INVALID_KE_PAYLOAD asked for: A sends that
    /// `INIT_REDO_WAIT` later (`sa_init::redo_due`).
    pub(crate) fn connect(&mut self) {
        self.a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), self.now);
        self.run();
        if self.a.sas.values().any(|sa| sa.init_redo.is_some()) {
            self.advance(crate::sa_init::INIT_REDO_WAIT);
        }
    }

    fn nat_port(port: u16) -> u16 {
        port + 40000
    }

    /// Delivers datagrams until none is left.
    pub(crate) fn run(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.log.push((Side::A, t.clone()));
                if (self.drop)(Side::A, &t) {
                    continue;
                }
                let from = if self.nat {
                    SocketAddr::new(NAT_IP, Self::nat_port(t.local_port))
                } else {
                    SocketAddr::new(t.local.unwrap_or(A_IP), t.local_port)
                };
                self.b.handle(self.now, t.remote, from, &t.data);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.log.push((Side::B, t.clone()));
                if (self.drop)(Side::B, &t) {
                    continue;
                }
                let to = if self.nat && t.remote.ip() == NAT_IP {
                    SocketAddr::new(A_IP, t.remote.port() - 40000)
                } else {
                    t.remote
                };
                assert_eq!(to.ip(), A_IP, "B sends to A (or A's NAT)");
                self.a.handle(self.now, to, SocketAddr::new(t.local.unwrap_or(B_IP), t.local_port), &t.data);
            }
            self.collect();
            if !moved {
                return;
            }
        }
        panic!("the endpoints never went quiet");
    }

    pub(crate) fn collect(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    /// Moves the clock to `now + d`, running every timer on the way.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.run();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("timers never settled");
    }

    pub(crate) fn events(&self, side: Side) -> &[Event] {
        match side {
            Side::A => &self.events_a,
            Side::B => &self.events_b,
        }
    }

    pub(crate) fn child_ups(&self, side: Side) -> Vec<&Event> {
        self.events(side).iter().filter(|e| matches!(e, Event::ChildUp { .. })).collect()
    }

    /// Child SAs `side` holds now.
    pub(crate) fn children(&self, side: Side) -> usize {
        let status = match side {
            Side::A => self.a.status(&peer_b()),
            Side::B => self.b.status(&peer_a()),
        };
        status.map_or(0, |s| s.children.len())
    }

    /// ChildDown events `side` reported.
    pub(crate) fn child_downs(&self, side: Side) -> usize {
        self.events(side).iter().filter(|e| matches!(e, Event::ChildDown { .. })).count()
    }

    pub(crate) fn ike_ups(&self, side: Side) -> usize {
        self.events(side).iter().filter(|e| matches!(e, Event::IkeUp { .. })).count()
    }

    /// After a collision settled: both ends on one and the same
    /// established IKE SA, and no SA lost on the way (`what` names the
    /// case in a failure). Returns A's SPI of it.
    pub(crate) fn assert_one_ike_sa_kept(&self, what: &str) -> u64 {
        let (a, b) = (self.a.status(&peer_b()).expect("A"), self.b.status(&peer_a()).expect("B"));
        assert_eq!((a.state, b.state), (crate::IkeState::Established, crate::IkeState::Established), "{what}");
        assert_eq!((a.spi_i, a.spi_r), (b.spi_i, b.spi_r), "{what}: the same IKE SA");
        assert_eq!((self.a.sas.len(), self.b.sas.len()), (1, 1), "{what}: one IKE SA each");
        for side in [Side::A, Side::B] {
            let downs =
                self.events(side).iter().filter(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. }));
            assert_eq!(downs.count(), 0, "{what}: {side:?} lost an SA");
        }
        a.spi_i
    }

    pub(crate) fn failures(&self, side: Side) -> Vec<&crate::Failure> {
        self.events(side)
            .iter()
            .filter_map(|e| if let Event::Failed { reason, .. } = e { Some(reason) } else { None })
            .collect()
    }
}

/// The (inbound SPI, outbound SPI, keymat in, keymat out) of a ChildUp.
pub(crate) fn child_keys(e: &Event) -> (u32, u32, Vec<u8>, Vec<u8>) {
    match e {
        Event::ChildUp { keys, .. } => (keys.spi_in, keys.spi_out, keys.keymat_in.to_vec(), keys.keymat_out.to_vec()),
        other => panic!("not a ChildUp: {other:?}"),
    }
}

/// Asserts that the two ChildUp events describe one child SA seen from
/// both ends: SPIs and keys crosswise equal.
pub(crate) fn assert_crosswise(a: &Event, b: &Event) {
    let (a_in, a_out, a_kin, a_kout) = child_keys(a);
    let (b_in, b_out, b_kin, b_kout) = child_keys(b);
    assert_eq!(a_out, b_in);
    assert_eq!(a_in, b_out);
    assert_eq!(a_kout, b_kin);
    assert_eq!(a_kin, b_kout);
    assert_ne!(a_kin, a_kout, "the two directions have different keys");
    assert!(crate::spi::is_valid_esp_spi(a_in) && crate::spi::is_valid_esp_spi(b_in));
}
