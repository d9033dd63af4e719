//! The lease our record lives under: kept across sessions while etcd still
//! knows it, and renewed by a task of its own.
//!
//! Renewal does not share the session's loop: that loop waits on applies
//! (a reconciliation, which may resolve endpoint names) and gathers bursts
//! of watch events, and a renewal waiting behind them for longer than the
//! lease's TTL would let the lease expire, and every other gateway drop
//! this one and move its flows, while nothing was wrong.

use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::store::timed;

/// The lease of our record: the one we hold if etcd still knows it, else a
/// new one.
pub(super) async fn ensure(client: &mut Client, lease: &mut Option<i64>, ttl: Duration) -> Result<i64, String> {
    if let Some(id) = *lease {
        let alive = timed("checking the lease", client.lease_time_to_live(id, None)).await?;
        if alive.ttl() > 0 {
            return Ok(id);
        }
        tracing::info!("registry: our lease expired while the store was unreachable; taking a new one");
    }
    let granted = timed("granting a lease", client.lease_grant(ttl.as_secs() as i64, None)).await?;
    *lease = Some(granted.id());
    Ok(granted.id())
}

/// Why renewal stopped; it ends the session.
pub(super) struct Lapse {
    /// etcd said the lease is gone: the next session takes a new one.
    pub expired: bool,
    pub why: String,
}

/// The renewal task of one session; dropping it stops the task.
pub(super) struct Renewal {
    task: JoinHandle<()>,
    /// Answered once, when renewal stops.
    pub lapsed: oneshot::Receiver<Lapse>,
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts renewing lease `id` every third of `ttl` (at least every half
/// second) on its own task; renewal stops when no answer came for half of
/// `ttl`.
pub(super) async fn renew(client: &mut Client, id: i64, ttl: Duration) -> Result<Renewal, String> {
    let (mut keeper, mut answers) = timed("keeping the lease alive", client.lease_keep_alive(id)).await?;
    let (tx, lapsed) = oneshot::channel();
    let task = tokio::spawn(async move {
        let lapse = keep_alive(&mut keeper, &mut answers, ttl).await;
        let _ = tx.send(lapse);
    });
    Ok(Renewal { task, lapsed })
}

async fn keep_alive(keeper: &mut LeaseKeeper, answers: &mut LeaseKeepAliveStream, ttl: Duration) -> Lapse {
    let lapse = |why: String| Lapse { expired: false, why };
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answered = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Half the TTL, not all of it: a member that keeps the
                // connection and answers nothing (frozen, or cut off by a
                // network that drops everything) is left while the lease
                // still has time for the next session, on another member,
                // to keep it. At the whole TTL the lease would be gone, and
                // every other gateway would drop this one and move its flows.
                if answered.elapsed() > ttl / 2 {
                    return lapse(format!(
                        "the lease keepalive went unanswered for {:.1} s",
                        answered.elapsed().as_secs_f64()
                    ));
                }
                if let Err(e) = timed("keeping the lease alive", keeper.keep_alive()).await {
                    return lapse(e);
                }
            }
            a = answers.message() => match a {
                Ok(Some(a)) if a.ttl() > 0 => answered = Instant::now(),
                // Gone: the next session grants a new lease and publishes
                // again; our record went with the old one.
                Ok(Some(_)) => return Lapse { expired: true, why: "the lease expired".into() },
                Ok(None) => return lapse("the lease keepalive stream ended".into()),
                Err(e) => return lapse(format!("keeping the lease alive: {}", super::store::describe(&e))),
            },
        }
    }
}
