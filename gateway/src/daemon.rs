//! Bringing an interface up, running it, and taking it down.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use causeway_wireguard::StaticSecret;
use ipnet::IpNet;

use crate::control;
use crate::error::{Chain, Error, Result};
use causeway_dataplane::interface::Interface;

use crate::gateway::Gateway;

/// A running interface: shared state and the worker threads.
pub struct Running {
    pub gw: Arc<Gateway>,
    workers: Vec<JoinHandle<()>>,
    /// The interface's name, held from before the TUN was created until
    /// the workers have stopped (`name_lock`): fields drop after
    /// `Drop::drop`, which joins the workers whichever way `Running` ends.
    _name: crate::name_lock::NameLock,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The user to continue as once every socket is open.
    pub run_as: Option<(String, crate::privileges::Ids)>,
}

pub struct Settings {
    pub name: String,
    pub private_key: Option<StaticSecret>,
    pub listen_port: u16,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    pub workers: usize,
}

/// The most queues a TUN device takes (the kernel's MAX_TAP_QUEUES).
const MAX_TUN_QUEUES: usize = 256;

/// One worker per CPU, up to the queues a TUN device takes.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_TUN_QUEUES)
}

// By hand: std has no if_nametoindex, and nix would need its whole "net"
// feature for this one call.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// How long a stop waits for the control plane's blocking tasks (a UAPI
/// or tunctl change being applied, an endpoint lookup) before it goes on.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a start waits for a daemon of the same name that is stopping
/// (its interface deleted) to let go of the name: its stop takes up to
/// SHUTDOWN_WAIT and then IKE's deletes.
const NAME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Creates the TUN and the sockets and starts the workers.
pub fn start(s: Settings) -> Result<Running> {
    // Before anything is made of it (the name is also a file name).
    if let Err(expected) = causeway_config::rules::wg_quick_interface_name(&s.name) {
        return Err(Error::InvalidName { name: s.name, expected });
    }
    // Opening a multi-queue TUN by the name of a live one attaches to it
    // and would take part of its traffic, so an existing name is refused:
    // one that another causewayd has claimed (even if it has not created
    // the device yet), or any device of that name.
    let lock = crate::sockets::lock_path(&s.name);
    let name = crate::name_lock::acquire(&lock, &s.name, NAME_WAIT, || interface_exists(&s.name))?;
    if interface_exists(&s.name) {
        return Err(Error::InterfaceExists(s.name));
    }
    let queues = causeway_dataplane::tun::create(&s.name, s.mtu, &s.addresses, s.workers)
        .map_err(|source| Error::CreateTun { name: s.name.clone(), source })?;
    let offload = queues[0].offload();
    let iface = Arc::new(
        Interface::new(s.name.clone(), s.private_key, s.mtu, s.workers, s.listen_port)
            .map_err(|source| Error::BindUdp { port: s.listen_port, source })?,
    );
    let workers = causeway_dataplane::worker::spawn(&iface, queues).map_err(Error::StartWorkers)?;
    tracing::info!(interface = %s.name, port = iface.listen_port(), workers = s.workers, offload, "interface up");
    Ok(Running { gw: Arc::new(Gateway::new(iface)), workers, _name: name, metrics_listen: None, run_as: None })
}

impl Running {
    /// Serves the UAPI socket and the timers until a signal or the
    /// interface's deletion, then stops everything. `ready` runs once the
    /// socket accepts connections.
    pub fn serve(self, ready: impl FnOnce()) -> Result<()> {
        let path = crate::sockets::uapi_socket_path(&self.gw.name);
        // Declared before the runtime so it outlives the listeners: the
        // helper removes the sockets only once nobody serves them.
        let mut cleanup = None;
        // Only sockets this daemon bound are removed at exit: a path found
        // in use belongs to another daemon.
        let mut bound = Vec::new();
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                // `up` has configured the peers by now: their IKE SAs,
                // routes and registry record go as at SIGTERM.
                self.stop();
                return Err(e.into());
            }
        };
        let api_path = crate::sockets::api_socket_path(&self.gw.name);
        let result = rt.block_on(async {
            // The API socket first: whoever sees the UAPI socket (wg, tunctl's
            // callers, scripts waiting for start-up) may use the API at once.
            let api_listener = crate::sockets::bind_private_socket(&api_path)?;
            bound.push(api_path.clone());
            let listener = crate::sockets::bind_private_socket(&path)?;
            bound.push(path.clone());
            let metrics = match self.metrics_listen {
                Some(addr) => {
                    let listener = crate::metrics::bind(addr).await?;
                    tracing::info!(%addr, "serving Prometheus metrics");
                    Some(tokio::spawn(crate::metrics::serve(self.gw.clone(), listener)))
                }
                None => None,
            };
            if let Some((user, ids)) = &self.run_as {
                cleanup = Some(crate::privileges::spawn_cleanup(&[
                    path.clone(),
                    api_path.clone(),
                    crate::sockets::lock_path(&self.gw.name),
                ])?);
                crate::privileges::drop_to(*ids)?;
                tracing::info!(%user, uid = ids.uid, "privileges dropped: running with CAP_NET_ADMIN only");
            }
            // The handlers go in before readiness is reported: a reload or
            // stop sent the moment the service manager hears "ready" must
            // find them, not the default action (which would end the
            // process and leave its sockets behind).
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            ready();
            let uapi = tokio::spawn(control::serve_uapi(self.gw.clone(), listener));
            let api = tokio::spawn(crate::api::serve(self.gw.clone(), api_listener));
            let reloader = self.gw.clone();
            let reloads = tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let iface = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || match iface.config_path() {
                        Some(path) => {
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                            if let Err(e) = crate::reload::reload(&iface, &path) {
                                tracing::error!("SIGHUP: configuration rejected, the running one stays:\n{e}");
                            }
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                        }
                        None => tracing::warn!("SIGHUP ignored: not started from a configuration file"),
                    })
                    .await;
                }
            });
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                _ = control::run_timers(self.gw.clone()) => {}
            }
            uapi.abort();
            api.abort();
            reloads.abort();
            if let Some(m) = metrics {
                m.abort();
            }
            Ok::<_, Error>(())
        });
        // Not a plain drop, which waits for every blocking task: an endpoint
        // lookup on a name server that does not answer would hold the
        // stop for resolv.conf's timeout times its attempts (half a minute
        // and more), past a service manager's patience. What is left of
        // such a task after the wait ends with the process.
        rt.shutdown_timeout(SHUTDOWN_WAIT);
        // Unprivileged, these fail; the helper removes them as we exit.
        for p in &bound {
            let _ = std::fs::remove_file(p);
        }
        let failed = self.gw.has_failed();
        self.stop();
        drop(cleanup);
        // A worker's fault ends the daemon with an error, so that a
        // service manager (Restart=on-failure) starts it again.
        result.and(if failed { Err(Error::WorkerFailed) } else { Ok(()) })
    }

    /// Stops the workers; the TUN goes away with the last queue.
    pub fn stop(mut self) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        // Our record goes first, so the other gateways move their flows
        // away while this one still carries them.
        if let Some(registry) = self.gw.registry() {
            registry.stop();
            self.gw.set_registry(None);
        }
        // No change applies from here on: a reload or UAPI set that the
        // runtime's shutdown left behind (still looking its names up) would
        // otherwise re-create what the stop removes (an IKE SA set up after
        // `stop_ike`, never deleted). A change being applied finishes
        // first. The lock is never released; the process ends after this.
        std::mem::forget(self.gw.changing());
        // IKE's deletes leave while the sockets are still open.
        self.gw.stop_ike();
        self.join_workers();
        // Routes last: removed while the TUN was still up, they would send
        // the peers' prefixes out by the default route, unencrypted, for
        // as long as IKE's deletes and the workers took. The kernel has
        // removed them with the device by now; this takes what is left,
        // on this (control-plane) thread, since the workers hold no
        // capability to remove routes.
        self.gw.remove_kernel_routes();
        tracing::info!(interface = %self.gw.name, "interface down");
        // The TUN's queues closed as their workers ended (each worker owns
        // its queue), so the device is gone and the name free: the name
        // lock goes with `self`, here. The UDP sockets close with the
        // gateway's last reference, which a control task the runtime left
        // may hold a little longer: a daemon started meanwhile with the
        // same port is refused the port, not the name.
    }

    /// Stops the workers and waits for them: each owns a TUN queue, and
    /// the device (and so the name) is free only once all have closed.
    fn join_workers(&mut self) {
        self.gw.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A `Running` that ends without `stop` (a panic unwinding through
/// `serve` or `up`) still stops its workers before its name lock is
/// released: otherwise a daemon started meanwhile would find the name free
/// and the device still there, held by workers that nobody told to stop.
/// Only the workers: what `stop` undoes in the control plane (routes, IKE
/// deletes, the registry record) takes locks and makes network calls that
/// a panic may have left broken, and a second panic while unwinding would
/// abort the process before the lock file is removed.
impl Drop for Running {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.join_workers();
        }
    }
}

/// What `up` checks before it creates anything: the file, its key and
/// PSK files (and their modes), and the user to run as, looked up.
fn load_for_up(config_path: &Path) -> Result<(causeway_config::Config, Option<(String, crate::privileges::Ids)>)> {
    let cfg = causeway_config::load_to_start(config_path)?;
    let run_as = match &cfg.interface.user {
        Some(u) => Some((u.clone(), crate::privileges::lookup(u)?)),
        None => None,
    };
    Ok((cfg, run_as))
}

/// `causewayd check --config FILE`: what `up` checks before it creates
/// anything (`load_for_up`), and nothing created or changed. Returns a
/// one-line summary.
pub fn check(config_path: &Path) -> Result<String> {
    let (cfg, _) = load_for_up(config_path)?;
    Ok(format!(
        "{}: valid ({} WireGuard peers, {} IPsec peers, {} sites{})",
        config_path.display(),
        cfg.peers.len(),
        cfg.ipsec_peers.len(),
        cfg.sites.len(),
        if cfg.registry.is_some() { ", a registry" } else { "" }
    ))
}

/// `causewayd up --config FILE`.
pub fn up(config_path: &Path, name: Option<String>, workers: Option<usize>, ready: impl FnOnce()) -> Result<()> {
    // Before anything is created, so an unknown user fails cleanly.
    let (cfg, run_as) = load_for_up(config_path)?;
    let name = name.or(cfg.interface.name.clone()).unwrap_or_else(|| "cw0".to_string());
    let mut running = start(Settings {
        name,
        private_key: Some(cfg.interface.private_key.clone()),
        listen_port: cfg.interface.listen_port,
        mtu: cfg.interface.mtu,
        addresses: cfg.interface.addresses.clone(),
        workers: workers.or(cfg.interface.workers).unwrap_or_else(default_workers),
    })?;
    running.metrics_listen = cfg.interface.metrics_listen;
    running.run_as = run_as;
    running.gw.set_config_path(config_path);
    running.gw.set_started_with(crate::start_settings::FixedAtStart::of(&cfg.interface));
    // Peers may be live by the time a later step fails (IKE SAs set up,
    // routes installed): the orderly stop deletes them before the error
    // ends the daemon, as at SIGTERM.
    if let Err(e) = configure(&running, &cfg) {
        running.stop();
        return Err(e);
    }
    running.serve(ready)
}

/// `up`'s steps once the interface runs: routes, the file's peers and
/// sites, the registry.
fn configure(running: &Running, cfg: &causeway_config::Config) -> Result<()> {
    if let Some(table) = cfg.interface.routes {
        running.gw.install_routes(table.0, &cfg.interface.addresses).map_err(Error::Netlink)?;
    }
    let report = crate::reload::reconcile(&running.gw, cfg);
    if let Some(why) = report.refused {
        return Err(Error::NotApplied(why));
    }
    running.gw.sync_kernel_routes();
    tracing::info!(%report, "configuration applied");
    // The file's peers carry traffic already; the registry's join them
    // once the store answers. Started before privileges are dropped: it
    // reads its TLS files and password now.
    if cfg.registry.is_some() {
        crate::registry::Registry::start(&running.gw, cfg.clone()).map_err(Error::Registry)?;
    }
    Ok(())
}

/// Commands of tunctl and wg that an operator may type to causewayd by
/// habit, as in `causewayd genkey` for `wg genkey`: wireguard-go would
/// create an interface of that name and detach, leaving a daemon nobody
/// asked for. Only names nobody gives an interface are here: `site`,
/// `peer` or `show` may well name one (wg-quick names the interface after
/// its file), and are served.
const KEY_AND_CONF_COMMANDS: &[(&str, &str)] = &[
    ("genkey", "tunctl"),
    ("pubkey", "tunctl"),
    ("genpsk", "tunctl"),
    ("showconf", "wg"),
    ("setconf", "wg"),
    ("addconf", "wg"),
    ("syncconf", "wg"),
];

/// Why `name` given as causewayd's interface is a mistake, if it is the
/// name of another tool's command.
pub fn command_not_interface(name: &str) -> Option<String> {
    let (_, tool) = KEY_AND_CONF_COMMANDS.iter().find(|(c, _)| *c == name)?;
    Some(format!(
        "'{name}' is a {tool} command, not an interface name: run `{tool} {name}`; causewayd takes an interface \
         to create (causewayd wg0) or a subcommand (causewayd up --config FILE)"
    ))
}

/// `causewayd IFNAME`: an empty interface configured through the UAPI, as
/// wireguard-go starts.
pub fn userspace(name: &str, ready: impl FnOnce()) -> Result<()> {
    let running = start(Settings {
        name: name.to_string(),
        private_key: None,
        listen_port: 0,
        mtu: causeway_config::DEFAULT_MTU,
        addresses: Vec::new(),
        workers: default_workers(),
    })?;
    running.serve(ready)
}

/// Environment variable through which a backgrounding parent asks its
/// child to report readiness on stdout.
pub const READY_ENV: &str = "CAUSEWAYD_REPORT_READY";

/// Tells a waiting parent why startup failed: the error with its causes,
/// from this library or from a binary that added context to one.
pub fn report_error(e: &(dyn std::error::Error + 'static)) {
    if std::env::var_os(READY_ENV).is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "error: {}", Chain(e));
        let _ = out.flush();
    }
}

/// Tells a waiting parent that the interface is up.
pub fn report_ready() {
    // Under systemd (Type=notify); a no-op elsewhere.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if std::env::var_os(READY_ENV).is_some() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
}

/// Runs this program again in the foreground, detached, and returns once
/// it reports readiness (or fails), as wireguard-go does for wg-quick;
/// the daemon's pid.
pub fn detach(args: &[String]) -> Result<u32> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(Error::OwnExecutable)?;
    let log = std::env::var_os("CAUSEWAYD_LOG_FILE");
    // The detached daemon outlives this process, so it must not log to our
    // stderr: writes to a closed pipe would fail. Startup errors come back
    // through the readiness pipe instead.
    let stderr = match &log {
        Some(p) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(Error::LogFile)?),
        None => Stdio::null(),
    };
    let mut child = Command::new(exe)
        .args(args)
        .arg("--foreground")
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(Error::StartBackground)?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(child.id());
    }
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    let status = child.wait()?;
    let msg = format!("{line}{rest}");
    Err(Error::BackgroundFailed { status, message: msg.trim_start_matches("error: ").trim_end().to_string() })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";

    // `causewayd genkey` once started a daemon for an interface named
    // genkey in the host's namespace and detached.
    #[test]
    fn another_tools_command_is_not_taken_for_an_interface_name() {
        for (name, tool) in [("genkey", "tunctl"), ("pubkey", "tunctl"), ("genpsk", "tunctl"), ("setconf", "wg")] {
            let why = super::command_not_interface(name).unwrap();
            assert!(why.contains(&format!("`{tool} {name}`")), "{why}");
        }
        // Names an interface may well have (wg-quick takes the file's).
        for name in ["wg0", "cw0", "genkey0", "upstream", "site", "peer", "show", "set", "reload"] {
            assert_eq!(super::command_not_interface(name), None);
        }
    }

    #[test]
    fn check_accepts_what_up_would_and_names_each_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        let write = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(&format!("[interface]\nprivate_key = \"{KEY}\"\n"));
        let summary = super::check(&path).unwrap();
        assert!(summary.ends_with("gw.toml: valid (0 WireGuard peers, 0 IPsec peers, 0 sites)"), "{summary}");
        write(&format!("[interface]\nprivate_key = \"{KEY}\"\nmtu = 10\nuser = \"causeway-no-such-user\"\n"));
        let e = format!("{:#}", anyhow::Error::from(super::check(&path).unwrap_err()));
        assert!(e.contains("gw.toml:3: interface.mtu"), "{e}");
        assert!(!e.contains(KEY), "{e}");
        write(&format!("[interface]\nprivate_key = \"{KEY}\"\nuser = \"causeway-no-such-user\"\n"));
        let e = format!("{:#}", anyhow::Error::from(super::check(&path).unwrap_err()));
        assert!(e.contains("causeway-no-such-user"), "the user is looked up too: {e}");
        // An inline key in a file others may read is refused, as `up` refuses it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(super::check(&path).is_err());
    }
}
