//! Seal and open speed of the ESP core on one core, for each cipher, on
//! 64- and 1420-byte inner packets, beside bare AES-256-GCM sealing from
//! aws-lc-rs and ring on buffers of the same size (what the crate's choice
//! of aws-lc-rs rests on).
//!
//! `cargo run --release -p causeway-esp --example esp_speed [seconds per size]`
//!
//! The machine is shared and noisy, so the contenders of one packet size
//! run interleaved, 20 ms each in turn, and both the mean rate and the
//! best 20 ms slice are printed: load that comes and goes hits all of them
//! alike, and the best slice approaches the unloaded speed. Gbit/s counts
//! inner-packet bytes. Opening copies the sealed datagram back into the
//! buffer before each call (it decrypts in place); "copy alone" shows what
//! that costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use causeway_esp::{Cipher, InboundSa, OutboundSa, SaKeys, Zeroizing};

const SIZES: [usize; 2] = [64, 1420];
const SLICE: Duration = Duration::from_millis(20);

type Job = Box<dyn FnMut(u64)>;

struct Contender {
    label: String,
    job: Job,
    calls: u64,
    secs: f64,
    best_pps: f64,
}

fn contender(label: impl Into<String>, job: Job) -> Contender {
    Contender { label: label.into(), job, calls: 0, secs: 0.0, best_pps: 0.0 }
}

fn keys(cipher: Cipher) -> SaKeys {
    SaKeys { spi: 0x1000, cipher, keymat: Zeroizing::new(vec![7; cipher.keymat_len()]) }
}

fn esp_jobs(cipher: Cipher, len: usize) -> [Contender; 2] {
    let out = OutboundSa::new(keys(cipher)).expect("keys");
    let inb = InboundSa::new(keys(cipher)).expect("keys");
    let padded = out.padded_len(len);
    let h = out.header_len();
    let mut buf = vec![0x45; out.wire_len(padded)];
    let n = out.seal(1, &mut buf, len, padded).expect("seal");
    let sealed = buf[..n].to_vec();
    let mut seal_buf = buf.clone();
    let seal = move |seq: u64| {
        // Sealing encrypts the payload in place: give it back an IPv4
        // version nibble. Sequence numbers stay far below 2^32 here.
        seal_buf[h] = 0x45;
        black_box(out.seal(seq, &mut seal_buf, len, padded).expect("seal"));
    };
    let open = move |_| {
        buf[..n].copy_from_slice(&sealed);
        black_box(inb.open(&mut buf[..n]).expect("open"));
    };
    [contender(format!("esp seal {cipher}"), Box::new(seal)), contender(format!("esp open {cipher}"), Box::new(open))]
}

fn nonce(i: u64) -> [u8; 12] {
    let mut n = [0; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    n
}

fn bare_jobs(len: usize) -> [Contender; 3] {
    use aws_lc_rs::aead as aws;
    use ring::aead as ring_aead;
    let aws_key = aws::LessSafeKey::new(aws::UnboundKey::new(&aws::AES_256_GCM, &[7; 32]).expect("key"));
    let mut aws_buf = vec![0u8; len];
    let aws_seal = move |i| {
        let n = aws::Nonce::assume_unique_for_key(nonce(i));
        let _ = black_box(aws_key.seal_in_place_separate_tag(n, aws::Aad::from(&[0; 8]), &mut aws_buf).expect("seal"));
    };
    let ring_key =
        ring_aead::LessSafeKey::new(ring_aead::UnboundKey::new(&ring_aead::AES_256_GCM, &[7; 32]).expect("key"));
    let mut ring_buf = vec![0u8; len];
    let ring_seal = move |i| {
        let n = ring_aead::Nonce::assume_unique_for_key(nonce(i));
        let _ = black_box(
            ring_key.seal_in_place_separate_tag(n, ring_aead::Aad::from(&[0; 8]), &mut ring_buf).expect("seal"),
        );
    };
    let src = vec![1u8; len + 34];
    let mut dst = vec![0u8; len + 34];
    let copy = move |_| {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    };
    [
        contender("bare aws-lc-rs AES-256-GCM seal", Box::new(aws_seal)),
        contender("bare ring AES-256-GCM seal", Box::new(ring_seal)),
        contender("copy alone (open's setup)", Box::new(copy)),
    ]
}

/// Runs the contenders in turn, a slice each, until `time` has passed.
fn race(contenders: &mut [Contender], time: Duration) {
    let start = Instant::now();
    let mut counter = 0u64;
    while start.elapsed() < time {
        for c in contenders.iter_mut() {
            let slice_start = Instant::now();
            let mut calls = 0u64;
            while slice_start.elapsed() < SLICE {
                for _ in 0..64 {
                    counter += 1;
                    calls += 1;
                    (c.job)(counter);
                }
            }
            let secs = slice_start.elapsed().as_secs_f64();
            c.calls += calls;
            c.secs += secs;
            c.best_pps = c.best_pps.max(calls as f64 / secs);
        }
    }
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    println!("{:<34} {:>6}  {:>22}  {:>22}", "", "inner", "mean", "best 20 ms slice");
    for len in SIZES {
        let mut all: Vec<Contender> = Cipher::ALL.into_iter().flat_map(|c| esp_jobs(c, len)).collect();
        all.extend(bare_jobs(len));
        race(&mut all, Duration::from_secs_f64(secs));
        for c in &all {
            let mean = c.calls as f64 / c.secs;
            let gbps = |pps: f64| pps * len as f64 * 8e-9;
            println!(
                "{:<34} {len:>4} B  {:>7.2} Gbit/s {:>5.2} Mpps  {:>7.2} Gbit/s {:>5.2} Mpps",
                c.label,
                gbps(mean),
                mean * 1e-6,
                gbps(c.best_pps),
                c.best_pps * 1e-6
            );
        }
    }
}
