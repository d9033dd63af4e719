//! Every kept input (the corpus, and each crash ever found, under
//! regressions/) run through its target on the stable toolchain, so a
//! fixed crash stays fixed even where cargo-fuzz cannot run.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| body(&data));
            assert!(result.is_ok(), "{target} fails on {}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no inputs kept for {target}");
}

#[test]
fn wire() {
    replay("wire", causeway_fuzz::wire);
}

/// The interface targets (UAPI, control API) build an interface only in a
/// network namespace of their own; where this thread cannot make one (not
/// root), nothing is applied to an interface. That fails the replay, saying
/// why, unless CAUSEWAY_TESTS_QUICK=1 asked for a quick unprivileged run:
/// then the replay goes on without the interface, with a line saying so.
fn interface_targets_run(target: &str) {
    if causeway_fuzz::isolated() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if root { "unshare(CLONE_NEWNET) failed as root" } else { "a network namespace needs root" };
    if std::env::var("CAUSEWAY_TESTS_QUICK").is_ok_and(|v| v == "1") {
        eprintln!("{target}: inputs not applied to an interface: {why} (CAUSEWAY_TESTS_QUICK=1)");
        return;
    }
    panic!(
        "the {target} replay cannot apply its inputs: {why}. Run it as root (scripts/test.sh), \
         or set CAUSEWAY_TESTS_QUICK=1 (scripts/test.sh --quick) to skip that on purpose"
    );
}

#[test]
fn uapi() {
    interface_targets_run("uapi");
    replay("uapi", causeway_fuzz::uapi);
}

#[test]
fn control_api() {
    interface_targets_run("control_api");
    replay("control_api", causeway_fuzz::control_api);
}

#[test]
fn esp() {
    replay("esp", causeway_fuzz::esp);
}

#[test]
fn ike() {
    replay("ike", causeway_fuzz::ike::ike);
}

#[test]
fn super_packet() {
    replay("super_packet", causeway_fuzz::super_packet::super_packet);
}

#[test]
fn config() {
    replay("config", causeway_fuzz::config);
}
