//! Ctrl-C for the programs that build labs: what an interrupted demo or
//! benchmark removes before it exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cleanup_all;

/// Set once `clean_up_on_interrupt` caught a signal; `Netns::new` reads it.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On SIGINT, SIGTERM or SIGHUP: removes everything registered and
/// `private` (a folder of keys and configurations, which must not outlive
/// an interrupted run), then exits with 128 + the signal's number. For the
/// programs that build labs (the demo, the benchmarks), and for the
/// namespace tests, which otherwise clean up through `Drop`: a signal ends
/// the process without it (a test step stopped at its time limit, or
/// Ctrl-C). A signal the program was started ignoring (`nohup`, a
/// background job of a script) stays ignored.
pub fn clean_up_on_interrupt(private: Option<PathBuf>) {
    use std::task::Poll;
    use tokio::signal::unix::{signal, SignalKind};
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let caught = rt.block_on(async {
            let mut signals = Vec::new();
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                if ignored(sig) {
                    continue;
                }
                match signal(SignalKind::from_raw(sig)) {
                    Ok(s) => signals.push((sig, s)),
                    Err(e) => eprintln!("cannot watch for signal {sig} ({e}): it leaves the lab to the next run"),
                }
            }
            if signals.is_empty() {
                return None;
            }
            Some(
                std::future::poll_fn(|cx| {
                    for (sig, s) in signals.iter_mut() {
                        if s.poll_recv(cx).is_ready() {
                            return Poll::Ready(*sig);
                        }
                    }
                    Poll::Pending
                })
                .await,
            )
        });
        let Some(sig) = caught else { return };
        // Before the registry is emptied: a namespace made from here on
        // removes itself (`Netns::new`) instead of outliving the run.
        INTERRUPTED.store(true, Ordering::SeqCst);
        // Straight to the descriptor: eprintln! from a thread a test
        // started goes to the test's captured output, never shown when the
        // process exits here.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\ninterrupted: removing the lab");
        cleanup_all();
        if let Some(private) = &private {
            let _ = std::fs::remove_dir_all(private);
        }
        std::process::exit(128 + sig);
    });
}

/// Whether `sig` is ignored (SIG_IGN) in this process.
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only writes the current one
    // into `old`, a zeroed (valid) sigaction owned by this frame.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
