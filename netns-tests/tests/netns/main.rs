//! Causeway's integration tests over real topologies in network namespaces,
//! in one test binary (one link instead of one per file). Each module is a
//! former test file, so a test is named `module::test`, for example
//! `faults::wan_down_for_five_seconds_recovers_by_itself`, and
//! `cargo test -p causeway-netns-tests --test netns -- faults::` runs one
//! module.
//!
//! Tests that build namespaces take the lab first (`lab_or_skip`): one at a
//! time, so topologies do not share the two cores. The lab fails a test that
//! cannot run (not root, a tool missing) unless CAUSEWAY_TESTS_QUICK=1 asks
//! for an unprivileged run that skips them. Nothing here sets the test
//! process's environment: a variable a gateway needs goes to that gateway
//! only (`Lab::child_env`), since the other tests run in threads alongside.
//!
//! `soak` is ignored by default; scripts/test.sh runs it with
//! `--ignored soak::`. `etcd_lab`, `bird_lab` and `fleet_lab` test the
//! lab of the `fleet` tests (sites and the registry) on their own.

mod bad_input;
mod bird_lab;
mod causeway_to_causeway;
mod dns_endpoint;
mod etcd_lab;
mod exit_codes;
mod failover;
mod faults;
mod fleet;
mod fleet_lab;
mod flood;
mod hub_and_spokes;
mod ipsec_pair;
mod large_uapi;
mod live_peers;
mod metrics;
mod moved_interface;
mod mss_clamp;
mod nat;
mod no_gso;
mod parallel_crypto;
mod privileges;
mod reload;
mod restarts;
mod roaming;
mod routes;
mod secrets;
mod soak;
mod source_filter;
mod strongswan_interop;
mod strongswan_pair;
mod systemd;
mod wg_quick;
mod wireguard_go;
