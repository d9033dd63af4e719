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

/// The interface targets run only in a namespace of their own: as root
/// (CI) they must really run.
fn interface_targets_run() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(causeway_fuzz::isolated(), "unshare(CLONE_NEWNET) failed as root");
    }
}

#[test]
fn uapi() {
    interface_targets_run();
    replay("uapi", causeway_fuzz::uapi);
}

#[test]
fn control_api() {
    interface_targets_run();
    replay("control_api", causeway_fuzz::control_api);
}

#[test]
fn config() {
    replay("config", causeway_fuzz::config);
}
