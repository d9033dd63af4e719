//! Cryptokey routing: longest-prefix lookups among 100,000 prefixes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use causeway_dataplane::allowed_ips::AllowedIps;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand_core::{OsRng, RngCore};

fn lookups(c: &mut Criterion) {
    let mut table = AllowedIps::default();
    for i in 0..100_000u32 {
        let r = OsRng.next_u64();
        let net = if i % 4 == 3 {
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from((0xfd00u128 << 112) | (r as u128) << 48), 48 + (r % 81) as u8)
                    .unwrap()
                    .trunc(),
            )
        } else {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff)), 16 + (r >> 40) as u8 % 17)
                    .unwrap()
                    .trunc(),
            )
        };
        table.insert(net, i);
    }
    let v4: Vec<IpAddr> =
        (0..4096).map(|_| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (OsRng.next_u32() & 0x00ff_ffff)))).collect();
    let v6: Vec<IpAddr> =
        (0..4096).map(|_| IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | (OsRng.next_u64() as u128) << 48))).collect();
    let mut g = c.benchmark_group("allowed_ips/100k");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("lookup-v4", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(table.lookup(v4[i]))
        })
    });
    g.bench_function("lookup-v6", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(table.lookup(v6[i]))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookups
}
criterion_main!(benches);
