//! The registry client's loop, on its own thread: a session connects,
//! keeps the lease alive, publishes the record, reads the fleet, applies
//! it, and follows the watch until the store fails us or we are stopped;
//! then, after a backoff, the next session starts over from a full read.
//!
//! Invariants: the view changes only from a complete read or from watch
//! events in revision order after it; the lease survives sessions (a new
//! one is granted only when etcd says it expired), so a short outage does
//! not make this gateway drop out of the others' peers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_wireguard::PublicKey;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, WatchOptions, WatchResponse,
};
use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;

use super::lease;
use super::record::{self, Member};
use super::store::{self, timed, Credentials};
use super::{lock, ChangeError, Command, Shared, SiteChange, SiteRequest, View, JOINED_UNPUBLISHED, NOTHING_CHANGED};

/// First retry after a failure, and the longest wait between retries.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A synced gateway whose session ends retries at once, and says nothing
/// of it, for this long: a killed etcd member breaks the watch and lease
/// streams it served, and the next session reaches a live member within
/// milliseconds. Only a store that stays unreachable makes the state
/// stale.
const GRACE: Duration = Duration::from_secs(3);
/// Watch events closer than this are applied together (a burst of puts
/// is one reconciliation, not one per record).
const QUIET: Duration = Duration::from_millis(20);
/// Applied at once however long a burst goes on.
const MAX_BATCH: usize = 1000;

pub(super) fn spawn(
    shared: Arc<Shared>,
    creds: Credentials,
    commands: UnboundedReceiver<Command>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("registry".into()).spawn(move || rt.block_on(run(shared, creds, commands)))
}

enum End {
    Stop,
    Failed(String),
}

async fn run(shared: Arc<Shared>, mut creds: Credentials, mut commands: UnboundedReceiver<Command>) {
    // `since_secs` in the status counts up while nothing else happens.
    let ticker = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ticker.publish_status();
        }
    });
    let mut lease = None;
    let mut backoff = MIN_BACKOFF;
    // When the store last stopped answering a synced gateway.
    let mut failing_since: Option<Instant> = None;
    // The etcd member the sessions use, until it fails one.
    let mut member = 0;
    // Operators' site requests that came while a synced gateway was
    // reconnecting: the next session carries them out once synced, unless
    // the store stays away (then they are refused) or their requesters
    // stopped waiting (the ticket says so).
    let mut deferred: Vec<SiteRequest> = Vec::new();
    loop {
        let mut synced = false;
        let end = match session(&shared, &mut creds, &mut commands, &mut lease, &mut synced, &mut member, &mut deferred)
            .await
        {
            Ok(end) => end,
            Err(e) => End::Failed(e),
        };
        let error = match end {
            End::Stop => return,
            End::Failed(e) => e,
        };
        // The next session starts at the next member, and comes back to
        // this one last: a member can answer the status check and fail
        // the session's calls (a learner refuses leases, a member cut off
        // from its cluster cannot serve linearizable reads), and starting
        // at it again would fail every session while another member could
        // serve them all.
        member += 1;
        if synced {
            backoff = MIN_BACKOFF;
            failing_since = None;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        let quiet_retry = shared.is_synced() && since.elapsed() < GRACE;
        if quiet_retry {
            tracing::debug!("registry session ended, reconnecting: {error}");
        } else {
            shared.failed(&error);
            for request in deferred.drain(..) {
                refuse_unreachable(request, &error);
            }
        }
        let pause = tokio::time::sleep(if quiet_retry { MIN_BACKOFF } else { backoff });
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                c = commands.recv() => match c {
                    None | Some(Command::Stop) => return,
                    // The next session publishes what the state says.
                    Some(Command::Republish) => {}
                    Some(Command::Credentials(new)) => creds.replace(*new),
                    Some(Command::Site(request)) if quiet_retry => deferred.push(request),
                    Some(Command::Site(request)) => refuse_unreachable(request, &error),
                },
            }
        }
        if !quiet_retry {
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Answers a site request that the store, unreachable, cannot take, if
/// its requester still waits.
fn refuse_unreachable((_, reply, ticket): SiteRequest, error: &str) {
    if ticket.start() {
        let _ = reply.send(Err(ChangeError::Unreachable(error.to_string())));
    }
}

/// Carries out one operator's site request, if its requester still waits;
/// a store failure in it ends the session (`Err`).
async fn site_request(
    shared: &Arc<Shared>,
    client: &mut Client,
    own: &mut Own,
    (change, reply, ticket): SiteRequest,
) -> Result<(), String> {
    if !ticket.start() {
        tracing::info!(
            ?change,
            "dropped a registry request that waited too long to start; its requester was told nothing changed"
        );
        return Ok(());
    }
    let answer = change_site(shared, client, own, change).await;
    let failed = match &answer {
        Err(e @ ChangeError::Store(_)) => Some(e.to_string()),
        _ => None,
    };
    let _ = reply.send(answer);
    failed.map_or(Ok(()), Err)
}

/// One connection's life. `Err` is a store failure (retry); `Ok(Stop)` a
/// clean stop with the record withdrawn. `deferred` requests are carried
/// out, in order, once the session is synced.
async fn session(
    shared: &Arc<Shared>,
    creds: &mut Credentials,
    commands: &mut UnboundedReceiver<Command>,
    lease: &mut Option<i64>,
    synced: &mut bool,
    member: &mut usize,
    deferred: &mut Vec<SiteRequest>,
) -> Result<End, String> {
    let mut client = store::connect(&shared.settings.endpoints, creds, member).await?;
    let ttl = shared.settings.lease_ttl;
    let id = lease::ensure(&mut client, lease, ttl).await?;
    let mut renewal = lease::renew(&mut client, id, ttl).await?;
    let mut own = Own { put_revision: 0, lease: id };
    let clash = own.publish(shared, &mut client).await?;

    let all = shared.layout.all();
    let mut view = View::default();
    let revision = read_all(&client, &all, |kv| {
        refused(kv.key(), view.put(&shared.layout, kv.key(), kv.value(), kv.create_revision()).refused);
    })
    .await?;
    view.revision = revision;
    // The gateway that held our name may have let it go between the
    // publish's read and this one: the watch, which starts after this
    // read, would never say so, and we would stay unpublished.
    let identity = shared.identity();
    let name_free = !view.members.contains_key(&(identity.site.clone(), identity.name.clone()));
    lock(&shared.state).view = view;
    if clash.is_some() && name_free {
        own.publish(shared, &mut client).await?;
    }
    apply(shared).await;
    *synced = true;
    shared.synced();
    // Before anything new: the operator asked for these first. A store
    // failure in one ends the session and leaves the rest held.
    while !deferred.is_empty() {
        let request = deferred.remove(0);
        site_request(shared, &mut client, &mut own, request).await?;
    }

    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut watch = timed("watching the registry", watcher.watch(all.as_str(), Some(options))).await?;
    loop {
        tokio::select! {
            msg = watch.message() => {
                let mut changed = false;
                let mut take = |msg| first(msg).and_then(|r| events(shared, &mut own, r)).map(|c| changed |= c);
                let mut outcome = take(msg);
                let mut batch = 1;
                while outcome.is_ok() && batch < MAX_BATCH {
                    match tokio::time::timeout(QUIET, watch.message()).await {
                        Ok(msg) => outcome = take(msg),
                        Err(_) => break,
                    }
                    batch += 1;
                }
                // Events already in the view are applied even when the watch
                // broke after them: the data plane follows the view, which
                // the store may not be there to send again for a while.
                if changed {
                    apply(shared).await;
                }
                outcome?;
                if own.lost(shared) {
                    tracing::info!("registry: our record was deleted or written over by someone else; publishing it again");
                    own.publish(shared, &mut client).await?;
                }
            }
            lapse = &mut renewal.lapsed => {
                let lapse = lapse.unwrap_or(lease::Lapse { expired: false, why: "the lease renewal stopped".into() });
                if lapse.expired {
                    *lease = None;
                }
                return Err(lapse.why);
            }
            c = commands.recv() => match c {
                None | Some(Command::Stop) => {
                    match timed("withdrawing our record", client.lease_revoke(id)).await {
                        Ok(_) => tracing::info!("registry: record withdrawn (lease revoked)"),
                        Err(e) => tracing::warn!("registry: {e}; the record expires with its lease"),
                    }
                    return Ok(End::Stop);
                }
                Some(Command::Republish) => {
                    own.publish(shared, &mut client).await?;
                }
                // This connection goes on as it was authenticated; the
                // next one uses these.
                Some(Command::Credentials(new)) => creds.replace(*new),
                Some(Command::Site(request)) => site_request(shared, &mut client, &mut own, request).await?,
            },
        }
    }
}

/// Keys read per request of the full read. With etcd's largest value
/// (1.5 MiB by default) a page stays within `MAX_MESSAGE`.
const PAGE: i64 = 32;
/// The largest response taken from etcd: gRPC's default of 4 MiB would
/// make a large fleet's read, or a few big values anywhere under the
/// prefix, fail every session.
const MAX_MESSAGE: usize = 64 << 20;

/// Reads every key under `prefix` at one revision, a page at a time, and
/// hands each to `take`; returns the revision read at.
async fn read_all(client: &Client, prefix: &str, mut take: impl FnMut(&KeyValue)) -> Result<i64, String> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let range_end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(range_end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = timed("reading the registry", kv.get(from.clone(), Some(options))).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        resp.kvs().iter().for_each(&mut take);
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(revision),
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the keyspace.
    vec![0]
}

/// The watch's next response, or why the watch is over.
fn first(msg: Result<Option<WatchResponse>, etcd_client::Error>) -> Result<WatchResponse, String> {
    match msg {
        Ok(Some(r)) if r.canceled() => Err(match r.compact_revision() {
            0 => format!("the watch was cancelled: {}", r.cancel_reason()),
            rev => format!("the watch fell behind a compaction (revision {rev}); reading again"),
        }),
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("the watch ended".into()),
        Err(e) => Err(format!("watching the registry: {}", store::describe(&e))),
    }
}

/// Takes a watch response's events into the view; whether it changed.
fn events(shared: &Shared, own: &mut Own, resp: WatchResponse) -> Result<bool, String> {
    let identity = shared.identity();
    let own_key = shared.layout.gateway(&identity.site, &identity.name);
    let mut st = lock(&shared.state);
    let mut changed = false;
    for e in resp.events() {
        let Some(kv) = e.kv() else { continue };
        st.view.revision = st.view.revision.max(kv.mod_revision());
        match e.event_type() {
            EventType::Put => {
                let o = st.view.put(&shared.layout, kv.key(), kv.value(), kv.create_revision());
                refused(kv.key(), o.refused);
                changed |= o.changed;
                // Another gateway wrote our key over our record: publishing
                // again finds it and reports the clash (`Own::publish`).
                // Not a record with our own key: that is this gateway's,
                // from an earlier lease, or a twin's, which publishing
                // would overwrite, and the twin us, without end.
                let theirs = kv.key() == own_key.as_bytes() && kv.lease() != own.lease;
                if theirs && kv.mod_revision() > own.put_revision {
                    let ours = st.file.interface.private_key.public_key();
                    let other = Member::decode(&identity.site, &identity.name, kv.value()).ok();
                    if other.is_none_or(|m| m.public_key != ours) {
                        own.put_revision = -1;
                    }
                }
            }
            EventType::Delete => {
                changed |= st.view.delete(&shared.layout, kv.key());
                if kv.key() == own_key.as_bytes() && kv.mod_revision() > own.put_revision {
                    own.put_revision = -1;
                }
            }
        }
    }
    Ok(changed)
}

fn refused(key: &[u8], why: Option<String>) {
    if let Some(why) = why {
        tracing::warn!(key = %String::from_utf8_lossy(key), "registry: record left out: {why}");
    }
}

async fn apply(shared: &Arc<Shared>) {
    let s = shared.clone();
    let _ = tokio::task::spawn_blocking(move || s.apply()).await;
}

/// Our record's state in this session.
struct Own {
    /// The revision of our last put; -1 once a later delete, or a later
    /// put by another gateway, was seen.
    put_revision: i64,
    /// The lease our record lives under.
    lease: i64,
}

impl Own {
    /// Whether our record is gone while we mean to be registered.
    fn lost(&self, shared: &Shared) -> bool {
        self.put_revision == -1 && shared.identity().registered
    }

    /// The record now at the name `site`/`name`: its mod revision (0 for
    /// none), and the public key of the gateway holding it when that is
    /// another (a record of a key other than `ours`, under another lease).
    async fn read_name(
        &self,
        shared: &Shared,
        client: &mut Client,
        (site, name): (&str, &str),
        ours: &PublicKey,
    ) -> Result<(i64, Option<PublicKey>), String> {
        let key = shared.layout.gateway(site, name);
        let existing = timed("reading the name's record", client.get(key.as_str(), None)).await?;
        let record = existing.kvs().first();
        let other = record
            .filter(|kv| kv.lease() != self.lease)
            .and_then(|kv| Member::decode(site, name, kv.value()).ok())
            .map(|m| m.public_key)
            .filter(|k| k != ours);
        Ok((record.map_or(0, |kv| kv.mod_revision()), other))
    }

    /// Puts our record under the lease, unless another gateway holds our
    /// name (a record of another key, under another lease): that is
    /// reported, not overwritten, and retried when that record goes.
    /// Returns that gateway's key when so.
    async fn publish(&mut self, shared: &Shared, client: &mut Client) -> Result<Option<PublicKey>, String> {
        let (identity, file) = {
            let st = lock(&shared.state);
            (
                st.identity.clone(),
                (st.file.interface.private_key.public_key(), st.file.interface.addresses.first().copied()),
            )
        };
        self.put_revision = 0;
        if !identity.registered {
            return Ok(None);
        }
        let key = shared.layout.gateway(&identity.site, &identity.name);
        let member = Member {
            site: identity.site.clone(),
            name: identity.name.clone(),
            public_key: file.0,
            endpoints: shared.settings.advertise.clone(),
            // Others route our own address (as a host) to us.
            tunnel_address: file.1.map(|a| IpNet::new(a.addr(), a.max_prefix_len()).unwrap_or(a)),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        // The put goes only over what was read: another gateway taking the
        // name in between (both starting at once) fails it, and the next
        // read finds that gateway's record. Each failure means someone else
        // wrote the key, so a few tries settle it.
        for _ in 0..3 {
            let (seen, other) = self.read_name(shared, client, (&identity.site, &identity.name), &file.0).await?;
            if let Some(other) = other {
                shared.publish_problem(Some(format!(
                    "{}/{} is registered by another gateway (public key {}): not publishing our record until it goes; give this gateway another name",
                    identity.site,
                    identity.name,
                    other.to_base64()
                )));
                return Ok(Some(other));
            }
            let unchanged = Compare::mod_revision(key.as_str(), CompareOp::Equal, seen);
            let put = TxnOp::put(key.as_str(), member.encode(), Some(PutOptions::new().with_lease(self.lease)));
            let done = timed("publishing our record", client.txn(Txn::new().when([unchanged]).and_then([put]))).await?;
            if done.succeeded() {
                self.put_revision = done.header().map_or(0, |h| h.revision());
                shared.publish_problem(None);
                return Ok(None);
            }
        }
        Err(format!("publishing our record: {key} kept changing under us"))
    }

    /// Deletes our record at `key` if it is still ours (under our lease):
    /// a record another gateway put there is left alone. Returns whether
    /// ours was there to delete.
    async fn withdraw(&self, client: &mut Client, key: &str) -> Result<bool, String> {
        let ours = Compare::lease(key, CompareOp::Equal, self.lease);
        let txn = Txn::new().when([ours]).and_then([TxnOp::delete(key, None)]);
        Ok(timed("withdrawing our record", client.txn(txn)).await?.succeeded())
    }
}

/// `tunctl site ...`. A `ChangeError::Store` ends the session too.
async fn change_site(
    shared: &Arc<Shared>,
    client: &mut Client,
    own: &mut Own,
    change: SiteChange,
) -> Result<String, ChangeError> {
    let store = ChangeError::Store;
    let identity = shared.identity();
    match change {
        SiteChange::Join(site) => {
            let name = identity.name.clone();
            if identity.registered && identity.site == site {
                return Ok(format!("already registered in site {site} as {name}"));
            }
            // Refused before anything changes when the name is taken there;
            // `publish` below still finds a gateway that takes it meanwhile.
            let ours = lock(&shared.state).file.interface.private_key.public_key();
            if let (_, Some(key)) = own.read_name(shared, client, (&site, &name), &ours).await.map_err(store)? {
                return Err(ChangeError::NameTaken { site, name, key: key.to_base64(), outcome: NOTHING_CHANGED });
            }
            if identity.registered {
                let old = shared.layout.gateway(&identity.site, &identity.name);
                own.withdraw(client, &old).await.map_err(store)?;
            }
            {
                let mut st = lock(&shared.state);
                st.identity.site = site.clone();
                st.identity.registered = true;
            }
            // Our own site changed: its gateways stop being peers, the old
            // one's become peers. From here the gateway is in the new site
            // whether or not the record is out: the next session publishes it.
            let published = own.publish(shared, client).await;
            apply(shared).await;
            let moved = if identity.registered { format!("left site {}; ", identity.site) } else { String::new() };
            match published {
                Ok(None) => Ok(format!("{moved}registered in site {site} as {name}")),
                Ok(Some(key)) => {
                    Err(ChangeError::NameTaken { site, name, key: key.to_base64(), outcome: JOINED_UNPUBLISHED })
                }
                Err(e) => Err(ChangeError::Store(format!(
                    "{e} ({moved}now in site {site}: the record is published when the registry answers again)"
                ))),
            }
        }
        SiteChange::Leave => {
            if !identity.registered {
                return Err(ChangeError::NotRegistered);
            }
            // Withdrawn before we count as unregistered: if the delete
            // fails, a retry still finds us registered and tries again.
            let key = shared.layout.gateway(&identity.site, &identity.name);
            let ours = own.withdraw(client, &key).await.map_err(store)?;
            {
                let mut st = lock(&shared.state);
                st.identity.registered = false;
                st.publish_problem = None;
            }
            shared.publish_status();
            let what = if ours { "withdrew" } else { "no longer publishing (another gateway's record stays)" };
            Ok(format!(
                "{what} {}/{} from the registry; still running, still following the registry",
                identity.site, identity.name
            ))
        }
        SiteChange::Set(site, prefixes) => {
            let key = shared.layout.site(&site);
            timed("writing the site", client.put(key, record::encode_site(&prefixes), None)).await.map_err(store)?;
            let list: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
            Ok(format!("site {site}: prefixes {}", if list.is_empty() { "none".into() } else { list.join(", ") }))
        }
        SiteChange::Remove(site) => {
            let key = shared.layout.site(&site);
            let gone = timed("removing the site", client.delete(key, None)).await.map_err(store)?;
            if gone.deleted() == 0 {
                return Err(ChangeError::NoSuchSite(site));
            }
            Ok(format!("removed site {site} (its gateways' records stay until they leave)"))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_ends_after_every_key_it_starts() {
        assert_eq!(super::prefix_end(b"/causeway/"), b"/causeway0");
        assert_eq!(super::prefix_end(b"/a\xff"), b"/b");
        assert_eq!(super::prefix_end(b"\xff\xff"), b"\0");
    }
}
