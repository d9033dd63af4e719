//! Running a command to its end with a time limit: a test or lab step that
//! waits on a hung program (a deadlocked daemon that never answers tunctl,
//! a tool stuck on a lock) fails with the command named instead of holding
//! up the run until CI's own limit kills everything.

use std::io::{self, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `Netns::exec`, `Netns::ip` and the lab's other one-shot
/// commands may take: far beyond any of them on a loaded machine (the
/// longest, a ping of 2,900 packets 20 ms apart, takes a minute).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Like `Command::output`, but kills the program (SIGKILL) and returns a
/// `TimedOut` error naming it when it runs longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    // Both pipes are drained meanwhile, so a program that writes more than
    // a pipe holds is not stalled by its reader.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The readers end once every holder of the pipes has exited;
            // a grandchild that inherited them may outlive the kill, so
            // they are not joined.
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} still ran after {} s; killed", limit.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_output_of_a_program_that_ends() {
        let out =
            output_within(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(30))
                .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn kills_a_program_that_runs_too_long() {
        let start = Instant::now();
        let e = output_within(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("sleep"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(20), "returned at the limit, not when sleep ended");
    }

    #[test]
    fn a_large_output_does_not_stall_the_program() {
        let out =
            output_within(Command::new("head").args(["-c", "1000000", "/dev/zero"]), Duration::from_secs(30)).unwrap();
        assert_eq!(out.stdout.len(), 1_000_000);
    }
}
