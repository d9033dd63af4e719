//! The lab's etcd (lab/src/etcd.rs) on its own: a three-member cluster,
//! each member in its own namespace on a WAN bridge, keeps serving reads
//! and writes through the other two when one is killed, takes the killed
//! one back with what it missed, and keeps its data across a stop of
//! every member (how the fleet tests cut the store off for a while).

use std::time::{Duration, Instant};

use causeway_netns_tests::*;
use lab::bridge::Bridge;
use lab::etcd::EtcdCluster;

/// Retries `f` for up to `timeout` (a write right after a member was
/// killed can meet the election of a new leader).
fn retry<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> anyhow::Result<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn a_three_member_cluster_survives_a_killed_member() {
    let Some(_lab) =
        fleet_lab("a_three_member_cluster_survives_a_killed_member", FleetNeeds { etcd: true, bird: false })
    else {
        return;
    };
    let version = lab::etcd::etcd_version().unwrap();
    eprintln!("etcd {version}");
    assert!(version.starts_with("3."), "an etcd v3 server: {version}");
    let wan_ns = Netns::new("wan").unwrap();
    let wan = Bridge::new(&wan_ns, "br0", &[]).unwrap();
    let started = Instant::now();
    let mut etcd = EtcdCluster::start(&wan, &["198.18.0.100", "198.18.0.101", "198.18.0.102"]).unwrap();
    eprintln!("three members healthy after {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        etcd.client_urls(),
        ["http://198.18.0.100:2379", "http://198.18.0.101:2379", "http://198.18.0.102:2379"]
    );
    let site1 = r#"{"prefixes":["10.1.0.0/16"]}"#;
    etcd.put("/causeway/sites/site1", site1).unwrap();
    assert_eq!(etcd.get("/causeway/sites/site1").unwrap().as_deref(), Some(site1));

    // The leader is the member whose loss matters most: an election follows.
    let leader = etcd.leader().unwrap().expect("the cluster has a leader");
    eprintln!("killing the leader, {}", etcd.members[leader].name);
    etcd.kill(leader);
    assert!(!etcd.members[leader].running());
    assert_eq!(etcd.live_client_urls().len(), 2);
    let site2 = r#"{"prefixes":["10.2.0.0/16"]}"#;
    retry("a write through the two members left", Duration::from_secs(15), || etcd.put("/causeway/sites/site2", site2));
    let sites = etcd.get_prefix("/causeway/sites/").unwrap();
    assert_eq!(
        sites,
        [
            ("/causeway/sites/site1".to_string(), site1.to_string()),
            ("/causeway/sites/site2".to_string(), site2.to_string())
        ]
    );
    let new_leader = retry("a new leader", Duration::from_secs(15), || {
        etcd.leader()?.ok_or_else(|| anyhow::anyhow!("no leader yet"))
    });
    assert_ne!(new_leader, leader, "a surviving member leads");

    // Back on its data directory, it catches up with the write it missed:
    // a serializable read is answered from its own copy.
    etcd.restart(leader).unwrap();
    etcd.wait_healthy(Duration::from_secs(30)).unwrap();
    let local = retry("the restarted member's own copy", Duration::from_secs(15), || {
        let out =
            etcd.etcdctl_on(leader, &["get", "--consistency=s", "--print-value-only", "/causeway/sites/site2"])?;
        if out.trim().is_empty() {
            anyhow::bail!("not there yet");
        }
        Ok(out)
    });
    assert_eq!(local.trim(), site2);

    // Every member stopped: the store is gone, and back with its data.
    etcd.stop_all();
    assert!(etcd.live_client_urls().is_empty());
    assert!(etcd.etcdctl(&["get", "/causeway/sites/site1"]).is_err(), "no member answers");
    let stopped = Instant::now();
    etcd.start_all().unwrap();
    eprintln!("healthy again {:.1} s after starting every member", stopped.elapsed().as_secs_f64());
    assert_eq!(etcd.get_prefix("/causeway/sites/").unwrap().len(), 2, "the data survived the stop");
    assert_eq!(etcd.del("/causeway/sites/site2").unwrap(), 1);
    assert_eq!(etcd.get("/causeway/sites/site2").unwrap(), None);
}
