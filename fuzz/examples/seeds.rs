//! Writes the starting corpus: real messages of each kind, made with the
//! fixed keys the targets use, so fuzzing begins past the cheap checks.
//! `cargo run --example seeds [target ...]` from fuzz/ (all targets when
//! none is named); the output is committed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use causeway_esp::{Cipher, OutboundSa, SaKeys, Zeroizing};
use causeway_fuzz::ike::{self, TestRng, PEER, RESPONDER};
use causeway_ikev2::{Endpoint, PeerId};
use causeway_wireguard::{Device, Received, StaticSecret, Time};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let only: Vec<String> = std::env::args().skip(1).collect();
    if !only.is_empty() && !only.iter().any(|t| t == target) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

/// An IPv4 TCP SYN with an MSS option of 1460.
fn syn_v4() -> Vec<u8> {
    let mut p = vec![0u8; 44];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&44u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    let tcp = &mut p[20..];
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    p
}

/// The same SYN over IPv6.
fn syn_v6() -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&24u16.to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8] = 0xfd;
    p[24] = 0xfd;
    let tcp = &mut p[40..];
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    p
}

/// ESP inputs: a mode byte (low two bits the cipher, bit 2 seal) and the
/// rest. Datagrams to open are sealed with the SAs' keys, as
/// `causeway_esp::fuzz` derives them (SPI 0x1000, bytes i ^ 0x5a), so the
/// fuzzer starts from packets that open.
fn esp_seeds() {
    for (c, cipher) in Cipher::ALL.into_iter().enumerate() {
        let mode = c as u8;
        write("esp", &format!("seal-syn-v4-{}", cipher.name()), &with_mode(4 | mode, &syn_v4()));
        let keys = SaKeys {
            spi: 0x1000,
            cipher,
            keymat: Zeroizing::new((0..cipher.keymat_len()).map(|i| i as u8 ^ 0x5a).collect()),
        };
        let out = OutboundSa::new(keys).unwrap();
        let payload = if c % 2 == 0 { syn_v4() } else { syn_v6() };
        let padded = out.padded_len(payload.len());
        let mut buf = vec![0; out.wire_len(padded)];
        let h = out.header_len();
        buf[h..h + payload.len()].copy_from_slice(&payload);
        let n = out.seal(7, &mut buf, payload.len(), padded).unwrap();
        write("esp", &format!("open-sealed-{}", cipher.name()), &with_mode(mode, &buf[..n]));
    }
    write("esp", "seal-syn-v6", &with_mode(4, &syn_v6()));
    write("esp", "seal-empty", &[4]);
    write("esp", "seal-not-ip", &with_mode(5, b"\x12 not an IP packet"));
    write("esp", "open-short", &with_mode(0, &[0, 0, 0x10, 0, 0, 0, 0, 1]));
}

/// IKE inputs: records of datagrams for the fuzz target's responder
/// (see `causeway_fuzz::ike`), made by a real initiator.
fn ike_seeds() {
    let (_, now) = ike::responder();
    let from = std::net::SocketAddr::new(PEER, 500);
    let to = std::net::SocketAddr::new(RESPONDER, 500);
    let initiator = |suite| {
        let mut i = Endpoint::new(Box::new(TestRng(0x1234_5678_9abc_def1)));
        i.set_peer(PeerId::from("r"), ike::initiator_config(b"a key the responder does not have", suite), now);
        i.connect(&PeerId::from("r"), to, Some(PEER), now);
        let init = i.poll_transmit().unwrap().data;
        (i, init)
    };
    let (_, init) = initiator(ike::x25519_suite());
    write("ike", "sa-init-x25519", &ike::record(0, &init));
    write("ike", "sa-init-from-stranger-4500", &ike::record(3, &init));
    let mut twice = ike::record(0, &init);
    twice.extend(ike::record(1 << 2, &init));
    write("ike", "sa-init-retransmitted", &twice);
    // A whole exchange with the MODP suite, whose key shares come from the
    // seeded generators: the IKE_AUTH decrypts at the fuzz target's
    // responder, whose PSK check then fails.
    let (mut i, init) = initiator(ike::modp_suite());
    let (mut r, now) = ike::responder();
    r.handle(now, to, from, &init);
    let answer = r.poll_transmit().unwrap().data;
    i.handle(now, from, to, &answer);
    let auth = i.poll_transmit().unwrap().data;
    let mut exchange = ike::record(0, &init);
    exchange.extend(ike::record(0, &auth));
    write("ike", "ike-auth-wrong-key", &exchange);
    write("ike", "ike-auth-without-init", &ike::record(0, &auth));
    write("ike", "header-only", &ike::record(0, &init[..28]));
}

fn main() {
    esp_seeds();
    ike_seeds();
    let now = Time::from_secs(2_000);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let b_public = StaticSecret::from_bytes([2; 32]).public_key();
    // A stranger's messages carry a valid MAC1 for b (it needs only b's
    // public key), so they reach the decryption of the static key.
    let stranger = Device::new(Some(StaticSecret::from_bytes([9; 32])));
    let to_b = stranger.add_peer(b_public, None, 0).unwrap();
    let init = stranger.create_initiation(&to_b, now, wall).unwrap();
    write("wire", "initiation-from-stranger", &with_mode(0, &init));
    // A responder that knows the stranger answers it: a response and, under
    // load, a cookie reply, both for the stranger's index.
    let responder = Device::new(Some(StaticSecret::from_bytes([2; 32])));
    responder.add_peer(StaticSecret::from_bytes([9; 32]).public_key(), None, 0).unwrap();
    let mut init2 = init;
    if let Ok(Received::HandshakeResponse { response, .. }) =
        responder.receive("198.18.0.9:51820".parse().unwrap(), &mut init2, now)
    {
        write("wire", "response", &with_mode(0, &response));
    }
    let mut data = vec![4u8; 32 + 16];
    data[0] = 4;
    data[1..4].fill(0);
    write("wire", "data-unknown-index", &with_mode(0, &data));
    write(
        "wire",
        "cookie-reply-shape",
        &with_mode(0, &{
            let mut c = vec![0u8; 64];
            c[0] = 3;
            c
        }),
    );
    write("wire", "sealed-syn-v4", &with_mode(1, &syn_v4()));
    write("wire", "sealed-syn-v6", &with_mode(1, &syn_v6()));
    write("wire", "sealed-empty", &[1]);

    let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let hex = "c819f3e5317f95d725b7b5eb62d8b7ce534dabea1ddab6215202418058077d29";
    write(
        "uapi",
        "full",
        format!(
            "private_key={hex}\nlisten_port=0\nfwmark=0\nreplace_peers=true\npublic_key={hex}\n\
             preshared_key={hex}\nendpoint=198.18.0.2:51820\nreplace_allowed_ips=true\n\
             allowed_ip=10.1.0.0/16\nallowed_ip=fd00:1::/48\npersistent_keepalive_interval=25\n"
        )
        .as_bytes(),
    );
    write("uapi", "remove", format!("public_key={hex}\nremove=true\n").as_bytes());
    write("uapi", "update-only", format!("public_key={hex}\nupdate_only=true\nendpoint=[fd00::2]:51820\n").as_bytes());
    // A prefix of the interface's IPsec peer: the whole request is refused,
    // its mark and its first peer included.
    write(
        "uapi",
        "ipsec-prefix-taken",
        format!(
            "fwmark=9\npublic_key={hex}\nallowed_ip=10.3.0.0/16\npublic_key={}\nallowed_ip=10.99.1.0/24\n\n",
            "5".repeat(64)
        )
        .as_bytes(),
    );
    // Prefixes moved from one peer to another and removed, a scoped and a
    // v4-mapped endpoint, a PSK removed: get's answer must replay as a set.
    let (a, b, zero) = ("a".repeat(64), "5".repeat(64), "0".repeat(64));
    write(
        "uapi",
        "prefixes-moved",
        format!(
            "fwmark=7\npublic_key={a}\nendpoint=[fe80::1%1]:51820\nallowed_ip=10.2.0.0/16\n\
             allowed_ip=10.2.3.0/24\nallowed_ip=-10.2.0.0/16\npublic_key={b}\n\
             endpoint=[::ffff:198.18.0.9]:51821\npreshared_key={zero}\npersistent_keepalive_interval=0\n\
             allowed_ip=10.2.3.0/24\nallowed_ip=fd00:2::/64\n\n"
        )
        .as_bytes(),
    );

    write("control_api", "status", br#"{"op":"status"}"#);
    write("control_api", "reload", br#"{"op":"reload"}"#);
    write(
        "control_api",
        "peer-add",
        format!(
            r#"{{"op":"peer_add","name":"dc-east","public_key":"{key}","endpoints":["198.18.1.2:51820"],"allowed_ips":["10.1.0.0/16"],"persistent_keepalive":25,"failover_after":5}}"#
        )
        .as_bytes(),
    );
    write("control_api", "peer-set", br#"{"op":"peer_set","peer":"dc-east","allowed_ips":["10.9.0.0/16"]}"#);
    write("control_api", "peer-remove", br#"{"op":"peer_remove","peer":"dc-east"}"#);

    let example = include_str!("../../config/examples/primary-dc.toml");
    write("config", "primary-dc", example.as_bytes());
    write(
        "config",
        "options",
        format!(
            "[interface]\nprivate_key = \"{key}\"\nmtu = 9000\nworkers = 2\nmss_clamp = false\n\
             metrics_listen = \"127.0.0.1:9586\"\ninstall_routes = true\nroute_table = 100\n\
             user = \"nobody\"\ndns_refresh = 30\n"
        )
        .as_bytes(),
    );
    write("config", "broken", b"[interface\nprivate_key = 3\n[[peer]]\nallowed_ips = [\"10.0.0.1/8\"]\n");
}
