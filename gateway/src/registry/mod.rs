//! The fleet registry on etcd (`[registry]`): this gateway publishes its
//! record under a lease it keeps alive, reads the fleet's sites and
//! gateways, watches them from the revision it read, and applies every
//! change as a difference: the file's configuration merged with the
//! registry's view (`merge`), through `reload::reconcile`, so peers that
//! did not change keep their sessions.
//!
//! The store may go away at any time. The data plane then keeps the last
//! known state and carries traffic; the status says "stale" with the
//! error (a log line per transition), and the client retries with backoff;
//! once back, it re-reads everything, re-publishes (under a new lease if
//! the old one expired) and applies what changed meanwhile.
//!
//! The etcd client runs on its own thread with its own tokio runtime, away
//! from the data plane (which has no tokio) and from the daemon's runtime
//! (whose timers must not wait on the store). Reconciliations are
//! serialized: a file reload and a registry change never interleave.
//!
//! Private keys never leave the gateway: the record holds the public key.

mod lease;
mod merge;
pub mod record;
pub mod requests;
mod store;
mod task;
mod ticket;
mod view;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::Config;
use ipnet::IpNet;

pub use merge::{merge, Merged, Uncarried};
pub use record::{Layout, Member};
pub use view::View;

use crate::api::types::RegistryStatus;
use crate::gateway::Gateway;
use crate::reload::Report;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the configuration has no [registry]")]
    NotConfigured,
    #[error("cannot read {}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("the etcd password is not UTF-8 text")]
    PasswordNotUtf8,
    #[error("cannot start the registry client")]
    Start(#[source] std::io::Error),
}

/// Why an operator's change to the registry (`SiteChange`) was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the registry client has stopped")]
    Stopped,
    #[error("the registry client was busy for {0} s (a slow or unreachable store) and did not start the change; nothing was changed")]
    NotStarted(u64),
    #[error(
        "the change started but did not finish in {0} s; it may still complete: `tunctl show` has the registry's state"
    )]
    Unfinished(u64),
    #[error("the registry is unreachable ({0}); nothing was changed")]
    Unreachable(String),
    #[error("this gateway is not registered in any site")]
    NotRegistered,
    #[error("no site {0} in the registry")]
    NoSuchSite(String),
    /// The store failed while carrying it out: the client reconnects.
    #[error("store: {0}")]
    Store(String),
    #[error("{site}/{name} is registered by another gateway (public key {key}); {outcome}")]
    NameTaken { site: String, name: String, key: String, outcome: &'static str },
}

/// What a `NameTaken` join changed.
pub(crate) const NOTHING_CHANGED: &str = "nothing was changed: give this gateway another name";
pub(crate) const JOINED_UNPUBLISHED: &str =
    "this gateway now serves that site but publishes no record until that gateway's goes: give it another name";

/// This gateway's place in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The site it serves: its gateways are not peers, its prefixes local.
    pub site: String,
    pub name: String,
    /// Whether it means to have a record (false after `site leave`).
    pub registered: bool,
}

/// The operator's changes to the registry (`tunctl site ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteChange {
    Join(String),
    Leave,
    Set(String, Vec<IpNet>),
    Remove(String),
}

/// An operator's site change, where its answer goes, and its ticket.
type SiteRequest = (SiteChange, std::sync::mpsc::Sender<Result<String, ChangeError>>, Arc<ticket::Ticket>);

enum Command {
    /// Carried out only if the ticket can still be started.
    Site(SiteRequest),
    /// What the record says changed (a reload's new key or address).
    Republish,
    /// Credentials read again at a reload, for the next connection.
    Credentials(Box<store::Credentials>),
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Synced,
    Stale,
}

struct State {
    /// The configuration file as last loaded.
    file: Config,
    view: View,
    identity: Identity,
    /// The configuration last applied (file and registry merged).
    merged: Option<Config>,
    /// What the last merge left out, to log each reason once.
    left_out: BTreeSet<String>,
    /// Site prefixes an IPsec gateway of their site cannot carry, by the
    /// last merge: kept to log each change once, and for `sites`.
    uncarried: Vec<Uncarried>,
    phase: Phase,
    since: Instant,
    /// The last failure to talk to the store; cleared when it answers.
    last_error: Option<String>,
    /// Why our record is not published (our name taken); cleared when it is.
    publish_problem: Option<String>,
}

impl State {
    /// A client's state before its first merge, in `phase`.
    fn new(file: Config, view: View, phase: Phase) -> State {
        let settings = file.registry.as_ref().expect("a registry client has [registry]");
        let identity = Identity { site: settings.site.clone(), name: settings.name.clone(), registered: true };
        State {
            file,
            view,
            identity,
            merged: None,
            left_out: BTreeSet::new(),
            uncarried: Vec::new(),
            phase,
            since: Instant::now(),
            last_error: None,
            publish_problem: None,
        }
    }
}

pub(crate) struct Shared {
    /// `[registry]` as the gateway started with it.
    settings: causeway_config::Registry,
    layout: Layout,
    state: Mutex<State>,
    /// Held for a whole merge and reconcile.
    apply_lock: Mutex<()>,
    gw: Weak<Gateway>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn identity(&self) -> Identity {
        lock(&self.state).identity.clone()
    }

    /// Merges the file with the view and applies the result; `None` once
    /// the gateway is gone.
    fn apply(&self) -> Option<Report> {
        let _one_at_a_time = lock(&self.apply_lock);
        let gw = self.gw.upgrade()?;
        let merged = {
            let st = lock(&self.state);
            merge(&st.file, &st.view, &st.identity.site)
        };
        let report = crate::reload::reconcile(&gw, &merged.config);
        let mut st = lock(&self.state);
        let now: BTreeSet<String> = merged.left_out.into_iter().collect();
        for why in now.difference(&st.left_out) {
            tracing::warn!("registry: left out: {why}");
        }
        st.left_out = now;
        log_uncarried(&st.uncarried, &merged.uncarried);
        st.uncarried = merged.uncarried;
        st.merged = Some(merged.config);
        drop(st);
        if !(report.added.is_empty() && report.removed.is_empty() && report.changed.is_empty()) {
            tracing::info!(%report, "registry change applied");
        }
        self.publish_status();
        Some(report)
    }

    fn publish_status(&self) {
        let Some(gw) = self.gw.upgrade() else { return };
        let st = lock(&self.state);
        gw.set_registry_status(Some(RegistryStatus {
            endpoints: self.settings.endpoints.clone(),
            site: if st.identity.registered { st.identity.site.clone() } else { String::new() },
            name: st.identity.name.clone(),
            state: match st.phase {
                Phase::Connecting => "connecting",
                Phase::Synced => "synced",
                Phase::Stale => "stale",
            }
            .into(),
            since_secs: st.since.elapsed().as_secs(),
            last_error: st.last_error.clone().or_else(|| st.publish_problem.clone()),
            gateways: st.view.members.len(),
            revision: st.view.revision,
        }));
    }

    /// The store answered and the view is current.
    fn synced(&self) {
        let mut st = lock(&self.state);
        match st.phase {
            Phase::Stale => tracing::info!(
                after_secs = st.since.elapsed().as_secs(),
                revision = st.view.revision,
                gateways = st.view.members.len(),
                "registry reachable again: re-read, and what changed meanwhile is applied"
            ),
            Phase::Connecting => {
                tracing::info!(revision = st.view.revision, gateways = st.view.members.len(), "registry synced")
            }
            Phase::Synced => {}
        }
        if st.phase != Phase::Synced {
            st.phase = Phase::Synced;
            st.since = Instant::now();
        }
        st.last_error = None;
        drop(st);
        self.publish_status();
    }

    /// Whether the last known state is current (not stale, not connecting).
    fn is_synced(&self) -> bool {
        lock(&self.state).phase == Phase::Synced
    }

    /// The store failed us: stale (or still connecting), with the error.
    fn failed(&self, error: &str) {
        let mut st = lock(&self.state);
        match st.phase {
            Phase::Synced => {
                tracing::warn!(
                    gateways = st.view.members.len(),
                    revision = st.view.revision,
                    "registry unreachable, keeping the last known state and retrying: {error}"
                );
                st.phase = Phase::Stale;
                st.since = Instant::now();
            }
            Phase::Connecting if st.last_error.is_none() => {
                tracing::warn!("registry not reachable yet, retrying: {error}")
            }
            _ => tracing::debug!("registry still unreachable: {error}"),
        }
        st.last_error = Some(error.to_string());
        drop(st);
        self.publish_status();
    }

    /// Why our record is not published (`None`: it is).
    fn publish_problem(&self, problem: Option<String>) {
        let mut st = lock(&self.state);
        if let Some(p) = problem.as_ref().filter(|p| st.publish_problem.as_ref() != Some(*p)) {
            tracing::warn!("registry: {p}");
        }
        st.publish_problem = problem;
        drop(st);
        self.publish_status();
    }
}

/// Logs the prefixes an IPsec gateway cannot carry that `now` adds to
/// `before`, and those no longer in it (remote_ts reaches the prefix, or
/// the site, the prefix or the peer is gone). Every registry change
/// merges anew, so a line per merge would repeat one problem for as long
/// as it lasts.
fn log_uncarried(before: &[Uncarried], now: &[Uncarried]) {
    // `now` names each (site, prefix, peer) once: the merge keeps a
    // site's prefix once and tells it once per peer.
    let was: BTreeSet<_> = before.iter().map(Uncarried::key).collect();
    for u in now.iter().filter(|u| !was.contains(&u.key())) {
        tracing::warn!("registry: site {}: {}", u.site, u.reason());
    }
    let is: BTreeSet<_> = now.iter().map(Uncarried::key).collect();
    for (site, prefix, peer) in was.difference(&is) {
        tracing::info!("registry: site {site}: {prefix} is no longer reported as not carried by IPsec peer \"{peer}\"");
    }
}

/// The registry client of one gateway.
pub struct Registry {
    shared: Arc<Shared>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How long `stop` waits for the record to be withdrawn.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

impl Registry {
    /// Starts the client for `file`'s `[registry]` and hangs it on `gw`,
    /// where reloads and the control API find it. Reads the TLS files and
    /// the password now: once privileges are dropped, they may be
    /// unreadable. Nothing waits for the store: the file's peers are
    /// applied already, and learnt ones follow when it answers.
    pub fn start(gw: &Arc<Gateway>, file: Config) -> Result<Arc<Registry>, RegistryError> {
        let settings = file.registry.clone().ok_or(RegistryError::NotConfigured)?;
        let creds = store::Credentials::load(&settings)?;
        let shared = Arc::new(Shared {
            layout: Layout::new(&settings.prefix),
            settings,
            state: Mutex::new(State::new(file, View::default(), Phase::Connecting)),
            apply_lock: Mutex::new(()),
            gw: Arc::downgrade(gw),
        });
        shared.publish_status();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = task::spawn(shared.clone(), creds, rx).map_err(RegistryError::Start)?;
        let registry = Arc::new(Registry { shared, commands: tx, thread: Mutex::new(Some(thread)) });
        gw.set_registry(Some(registry.clone()));
        Ok(registry)
    }

    /// Applies a newly loaded configuration file, merged with the
    /// registry's view. `[registry]` itself is fixed at start (a change
    /// there is reported as needing a restart), except the keepalive and
    /// failover of learnt peers, which apply now, and the credentials: the
    /// TLS files and the password are read again, so that certificates
    /// rotated at the same paths, or a new password, serve the next
    /// connection without a restart.
    pub fn apply_file(&self, mut cfg: Config) -> Report {
        let fixed = |r: &causeway_config::Registry| {
            (
                r.endpoints.clone(),
                r.prefix.clone(),
                r.site.clone(),
                r.name.clone(),
                r.advertise.clone(),
                r.lease_ttl,
                r.tls.clone(),
                r.user.as_ref().map(|(name, _)| name.clone()),
            )
        };
        let restart = cfg.registry.as_ref().map(fixed) != Some(fixed(&self.shared.settings));
        let credentials = match &cfg.registry {
            Some(r) if !restart && (r.tls.is_some() || r.user.is_some()) => Some(store::Credentials::load(r)),
            _ => None,
        };
        let published = |c: &Config| (c.interface.private_key.public_key(), c.interface.addresses.first().copied());
        let (republish, readdressed, before) = {
            let mut st = lock(&self.shared.state);
            // The interface keeps the addresses it started with until a
            // restart: the record goes on naming those, where publishing
            // the file's new one would route it to a gateway without it.
            let readdressed = cfg.interface.addresses != st.file.interface.addresses;
            cfg.interface.addresses = st.file.interface.addresses.clone();
            let changed = published(&st.file) != published(&cfg);
            (changed, readdressed, std::mem::replace(&mut st.file, cfg))
        };
        let mut report = self.shared.apply().unwrap_or_default();
        if report.refused.is_some() {
            // Nothing changed: the record goes on saying what it said, and
            // the next merge starts from the file that is applied.
            lock(&self.shared.state).file = before;
            return report;
        }
        if republish {
            let _ = self.commands.send(Command::Republish);
        }
        match credentials {
            Some(Ok(creds)) => {
                let _ = self.commands.send(Command::Credentials(Box::new(creds)));
            }
            // A daemon that dropped root may not read root's key file any
            // more: the credentials it has still serve.
            Some(Err(e)) => {
                tracing::warn!("registry: credentials not read again ({e}); the next connection uses those read before")
            }
            None => {}
        }
        if readdressed && !report.needs_restart.iter().any(|r| r == "addresses") {
            report.needs_restart.push("addresses".into());
        }
        if restart {
            report.needs_restart.push("registry".into());
        }
        report
    }

    /// Carries out an operator's change; the answer says what was done,
    /// or why not.
    pub fn request(&self, change: SiteChange) -> Result<String, ChangeError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Arc::new(ticket::Ticket::default());
        self.commands.send(Command::Site((change, tx, t.clone()))).map_err(|_| ChangeError::Stopped)?;
        ticket::wait(&rx, &t, ticket::START_PATIENCE, ticket::FINISH_PATIENCE)
    }

    /// Withdraws this gateway's record (revoking its lease) and stops the
    /// client. With the store unreachable the record stays until its lease
    /// expires.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let Some(thread) = lock(&self.thread).take() else { return };
        let deadline = Instant::now() + STOP_PATIENCE;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("registry client did not stop in time; its record expires with its lease");
        }
    }

    /// The configuration last applied, file and registry merged.
    pub fn merged(&self) -> Option<Config> {
        lock(&self.shared.state).merged.clone()
    }

    /// The configuration last applied, with this gateway's own site and
    /// that site's prefixes in the view (the merge leaves them out), read
    /// under one lock, so no apply or view change falls between the reads
    /// (the merged configuration is still the last apply's, the view the
    /// current one).
    pub fn merged_with_own_site(&self) -> Option<(Config, String, Vec<IpNet>)> {
        let st = lock(&self.shared.state);
        let merged = st.merged.clone()?;
        let own = st.view.sites.get(&st.identity.site).cloned().unwrap_or_default();
        Some((merged, st.identity.site.clone(), own))
    }

    /// What of `prefixes`, written for `site`, an IPsec gateway of the
    /// site in the file could not carry: each prefix once, and nothing for
    /// this gateway's own site, whose prefixes the merge does not route.
    pub fn uncarried_for(&self, site: &str, prefixes: &[IpNet]) -> Vec<Uncarried> {
        let st = lock(&self.shared.state);
        if site == st.identity.site {
            return Vec::new();
        }
        let unique: BTreeSet<&IpNet> = prefixes.iter().collect();
        unique.into_iter().flat_map(|n| merge::unreached_by(site, n, &st.file.ipsec_peers)).collect()
    }

    /// Whether the configuration file defines a `[[site]]` named `site`,
    /// which this gateway then takes over the registry's.
    pub fn file_defines_site(&self, site: &str) -> bool {
        lock(&self.shared.state).file.sites.iter().any(|s| s.name == site)
    }

    /// Site prefixes an IPsec gateway of their site cannot carry, by the
    /// last merge.
    pub fn uncarried(&self) -> Vec<Uncarried> {
        lock(&self.shared.state).uncarried.clone()
    }

    /// The registry as last read.
    pub fn view(&self) -> View {
        lock(&self.shared.state).view.clone()
    }

    pub fn identity(&self) -> Identity {
        self.shared.identity()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::merge::tests::{file_config, ipsec_peer, member, view};
    use causeway_dataplane::interface::Interface;
    use causeway_wireguard::StaticSecret;

    /// What the closure logged at INFO and above.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = lock(&sink.0).clone();
        String::from_utf8(text).unwrap()
    }

    /// A registry client without a store: its view is set by the test.
    fn registry(gw: &Arc<Gateway>, file: Config, view: View) -> Arc<Registry> {
        let settings = file.registry.clone().unwrap();
        let shared = Arc::new(Shared {
            layout: Layout::new(&settings.prefix),
            settings,
            state: Mutex::new(State::new(file, view, Phase::Synced)),
            apply_lock: Mutex::new(()),
            gw: Arc::downgrade(gw),
        });
        let (commands, _) = tokio::sync::mpsc::unbounded_channel();
        let registry = Arc::new(Registry { shared, commands, thread: Mutex::new(None) });
        gw.set_registry(Some(registry.clone()));
        registry
    }

    // A registry site served by an IPsec gateway of the file: the prefix
    // its remote_ts misses (the gateway's SA drops what the site sends it
    // there) stays routed to the site, since taking its route away would
    // send its traffic out unencrypted, and is told: logged once however
    // often the registry changes, shown in `sites` until a reload widens
    // remote_ts.
    #[test]
    fn a_registry_prefix_outside_an_ipsec_gateways_selectors_is_told_once_and_stays_routed() {
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let iface = Interface::new("cwreg1".into(), Some(secret.clone()), 1420, 1, 0).unwrap();
        let gw = Arc::new(Gateway::new(Arc::new(iface)));
        // Ephemeral IKE ports, so the test needs neither root nor free 500/4500.
        gw.set_ipsec_ports(0, 0);
        let mut file = file_config(&secret, "east", "gw1");
        file.interface.listen_port = 0;
        file.ipsec_peers.push(ipsec_peer("west-srx", "west", &["10.2.0.0/16"]));
        let routed = "initiate = false\nremote_id = \"north.example\"\nallowed_ips = [\"10.7.0.0/16\"]\n";
        file.ipsec_peers.push(crate::ipsec::convert::tests::parsed_peer("north-srx", routed));
        let sites: &[(&str, &[&str])] = &[("west", &["10.2.0.0/16", "10.9.0.0/16"])];
        let r = registry(&gw, file.clone(), view(Vec::new(), sites));
        let route = |ip: &str| gw.routes().lookup(ip.parse().unwrap()).map(|r| r.label());

        let logs = logged(|| {
            r.shared.apply().unwrap();
            // A registry change elsewhere merges again: nothing new to say.
            lock(&r.shared.state).view = view(vec![member("south", "gw1", 5)], sites);
            r.shared.apply().unwrap();
        });
        assert_eq!(route("10.2.0.1").as_deref(), Some("site west"));
        assert_eq!(route("10.9.0.1").as_deref(), Some("site west"), "still the site's; no route would leak it");
        let west = gw.site("west").unwrap();
        assert_eq!(west.members().iter().map(|p| p.name()).collect::<Vec<_>>(), ["west-srx"]);
        assert_eq!(logs.matches("10.9.0.0/16 lies outside every remote_ts selector").count(), 1, "{logs}");
        assert!(logs.contains("WARN") && logs.contains("site west: 10.9.0.0/16 lies outside"), "{logs}");

        let s = crate::api::sites(&gw);
        let shown: Vec<(&str, &str, &str)> =
            s.uncarried.iter().map(|u| (u.site.as_str(), u.prefix.as_str(), u.peer.as_str())).collect();
        assert_eq!(shown, [("west", "10.9.0.0/16", "west-srx")]);
        assert!(s.uncarried[0].reason.contains("widen its remote_ts"), "{}", s.uncarried[0].reason);
        let asked = ["10.9.0.0/16".parse().unwrap(), "10.2.0.0/16".parse().unwrap()];
        let told: Vec<String> = r.uncarried_for("west", &asked).iter().map(|u| u.prefix.to_string()).collect();
        assert_eq!(told, ["10.9.0.0/16"], "what `tunctl site set` is told");
        assert_eq!(r.uncarried_for("west", &[asked[0], asked[0]]).len(), 1, "a prefix asked twice is told once");
        assert!(r.uncarried_for("south", &asked).is_empty());
        // Still west's: this gateway's merge would leave it out of another site.
        let reply = crate::api::handle(&gw, r#"{"op":"site_set","site":"south","prefixes":["10.9.1.0/24"]}"#);
        assert_eq!(
            reply,
            crate::api::types::Reply::Error(
                "registry: 10.9.1.0/24 overlaps 10.9.0.0/16 of site west; each address may belong to one site or peer \
                 only"
                    .into()
            )
        );
        // An IPsec peer's allowed_ips are its own as a WireGuard peer's are.
        assert_eq!(route("10.7.0.1").as_deref(), Some("peer north-srx"));
        let reply = crate::api::handle(&gw, r#"{"op":"site_set","site":"south","prefixes":["10.7.1.0/24"]}"#);
        assert_eq!(
            reply,
            crate::api::types::Reply::Error(
                "registry: 10.7.1.0/24 overlaps 10.7.0.0/16 of peer north-srx; each address may belong to one site or \
                 peer only"
                    .into()
            )
        );

        let mut wider = file;
        wider.ipsec_peers[0] = ipsec_peer("west-srx", "west", &["10.2.0.0/16", "10.9.0.0/16"]);
        let logs = logged(|| {
            r.apply_file(wider);
        });
        assert_eq!(route("10.9.0.1").as_deref(), Some("site west"));
        assert!(
            logs.contains("site west: 10.9.0.0/16 is no longer reported as not carried by IPsec peer \"west-srx\""),
            "{logs}"
        );
        assert!(crate::api::sites(&gw).uncarried.is_empty());
        if let Some(ike) = gw.ike() {
            ike.stop();
        }
    }
}
