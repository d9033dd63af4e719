//! Transport encryption and decryption through Causeway's pipeline against
//! raw ring ChaCha20-Poly1305 on the same buffers, and full handshakes.
//!
//! The ratio to raw ring is the price of everything Causeway adds per
//! packet (the nonce reservation, header and padding, the keypair and peer
//! lookups, the replay window and the timer hooks) and, since Causeway's
//! cipher is aws-lc-rs's, the difference between the two libraries.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use causeway_wireguard::{Device, Received, StaticSecret, Time};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand_core::OsRng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

const MTU: usize = 1420;

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).unwrap())
}

fn nonce(c: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&c.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Two devices with an established session, `a` the initiator.
fn session() -> (Device, Device, std::sync::Arc<causeway_wireguard::Peer>) {
    let (ka, kb) = (StaticSecret::random(&mut OsRng), StaticSecret::random(&mut OsRng));
    let (a, b) = (Device::new(Some(ka.clone())), Device::new(Some(kb.clone())));
    let pa = a.add_peer(kb.public_key(), None, 0).unwrap();
    b.add_peer(ka.public_key(), None, 0).unwrap();
    let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let mut init = a.create_initiation(&pa, Time::from_secs(1), SystemTime::now()).unwrap();
    let Received::HandshakeResponse { mut response, .. } = b.receive(src, &mut init, Time::from_secs(1)).unwrap()
    else {
        panic!()
    };
    assert!(matches!(a.receive(src, &mut response, Time::from_secs(1)).unwrap(), Received::SessionEstablished { .. }));
    (a, b, pa)
}

fn transport(c: &mut Criterion) {
    for size in [64usize, MTU] {
        let mut g = c.benchmark_group(format!("encrypt/{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        let key = ring_key();
        let mut buf = vec![0u8; size + 64];
        let mut counter = 0u64;
        g.bench_function("ring", |b| {
            b.iter(|| {
                counter += 1;
                black_box(
                    key.seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut buf[16..16 + size]).unwrap(),
                )
            })
        });
        let (a, _b, peer) = session();
        let kp = peer.current_keypair().unwrap();
        let padded = causeway_wireguard::padded_len(size, MTU);
        g.bench_function("causeway-keypair", |b| {
            b.iter(|| {
                let c = kp.reserve(1).unwrap();
                black_box(kp.seal(c, &mut buf, size, padded).unwrap());
            })
        });
        g.bench_function("causeway-device", |b| {
            b.iter(|| black_box(a.seal(&peer, &mut buf, size, MTU, Time::from_secs(2)).unwrap()));
        });
        g.finish();

        let mut g = c.benchmark_group(format!("decrypt/{size}"));
        g.throughput(Throughput::Bytes(size as u64));
        let mut counter = 0u64;
        g.bench_function("ring", |b| {
            b.iter_batched_ref(
                || {
                    counter += 1;
                    let mut m = vec![0u8; size + 16];
                    let tag = key.seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut m[..size]).unwrap();
                    m[size..].copy_from_slice(tag.as_ref());
                    (counter, m)
                },
                |(c, m)| black_box(key.open_in_place(nonce(*c), Aad::empty(), m).unwrap().len()),
                BatchSize::SmallInput,
            )
        });
        let (a, bdev, peer) = session();
        let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        g.bench_function("causeway-device", |b| {
            b.iter_batched_ref(
                || {
                    let mut m = vec![0u8; size + 64];
                    let s = a.seal(&peer, &mut m, size, MTU, Time::from_secs(2)).unwrap();
                    m.truncate(s.len);
                    m
                },
                |m| match bdev.receive(src, m, Time::from_secs(2)).unwrap() {
                    Received::Data { plaintext, .. } => black_box(plaintext.len()),
                    _ => unreachable!(),
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn handshakes(c: &mut Criterion) {
    let (ka, kb) = (StaticSecret::random(&mut OsRng), StaticSecret::random(&mut OsRng));
    let (a, b) = (Device::new(Some(ka.clone())), Device::new(Some(kb.clone())));
    let pa = a.add_peer(kb.public_key(), None, 0).unwrap();
    b.add_peer(ka.public_key(), None, 0).unwrap();
    let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let base = SystemTime::now();
    let mut step = 0u64;
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("causeway", "initiation+response"), |bench| {
        bench.iter(|| {
            // Each handshake 6 s of protocol time after the last: REKEY_TIMEOUT
            // and the initiation flood limit both allow it.
            step += 1;
            let now = Time::from_secs(step * 6);
            let wall = base + Duration::from_secs(step * 6);
            let mut init = a.create_initiation(&pa, now, wall).unwrap();
            let Received::HandshakeResponse { mut response, .. } = b.receive(src, &mut init, now).unwrap() else {
                panic!()
            };
            black_box(a.receive(src, &mut response, now).unwrap());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = transport, handshakes
}
criterion_main!(benches);
