//! causewayd: the Causeway tunnel gateway daemon.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A WireGuard-compatible inter-datacenter tunnel gateway.
///
/// Run it from a configuration file (`causewayd up --config gw.toml`), or
/// as a drop-in for wireguard-go (`causewayd wg0`, then configure it with
/// `wg` or wg-quick with WG_QUICK_USERSPACE_IMPLEMENTATION=causewayd).
#[derive(Parser)]
#[command(name = "causewayd", bin_name = "causewayd", version, args_conflicts_with_subcommands = true, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Interface to create and serve on /var/run/wireguard/IFNAME.sock
    /// (wireguard-go compatible mode).
    ifname: Option<String>,
    /// Stay attached to the terminal instead of detaching once ready.
    #[arg(short, long)]
    foreground: bool,
}

const EXAMPLES: &str = "Examples:
  causewayd check --config /etc/causeway/gw.toml
  causewayd up --config /etc/causeway/gw.toml
  causewayd wg0 && wg setconf wg0 wg0.conf
  WG_QUICK_USERSPACE_IMPLEMENTATION=causewayd wg-quick up ./wg0.conf

Logs go to stderr (RUST_LOG=debug for more); a detached daemon writes
them to $CAUSEWAYD_LOG_FILE if set.

Exit codes: 0 success (a detached daemon is up and serving); 1 a failure
(the configuration refused, the interface or a port taken, not root);
2 a usage error.";

#[derive(Subcommand)]
enum Command {
    /// Bring up an interface from a configuration file and run in the
    /// foreground until SIGTERM or SIGINT.
    #[command(after_help = "Examples:
  causewayd up --config /etc/causeway/gw.toml
  causewayd up --config gw.toml --interface cw1 --workers 2

SIGHUP (or tunctl reload) re-reads the file; a file with a problem is
refused and the running configuration stays. README: Running a gateway.")]
    Up {
        /// The gateway's TOML configuration.
        #[arg(short, long)]
        config: PathBuf,
        /// Interface name (default: the config's name, else cw0).
        #[arg(short, long)]
        interface: Option<String>,
        /// Data-plane worker threads (default: the config's, else one per core).
        #[arg(short, long, value_parser = workers)]
        workers: Option<usize>,
    },
    /// Check a configuration file without bringing anything up: every
    /// problem is listed with its file, line and field, and the exit
    /// status is 0 only for a file `up` would accept (key and PSK files
    /// and their modes, and the user to run as, included). For use before
    /// `up` or a reload.
    #[command(after_help = "Example:
  causewayd check --config /etc/causeway/gw.toml && tunctl reload cw0")]
    Check {
        /// The gateway's TOML configuration.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Internal: started by `up` before it drops root; removes the control
    /// sockets and the name lock once the daemon has exited.
    #[command(hide = true)]
    CleanupSockets {
        /// The daemon whose exit to wait for.
        #[arg(long)]
        daemon: u32,
        paths: Vec<PathBuf>,
    },
}

/// `--workers`, by the configuration's rule; 0 is one per core, as there.
fn workers(arg: &str) -> Result<usize, String> {
    let n = arg.parse::<u64>().map_err(|_| format!("expected a number of threads, got {arg:?}"))?;
    let n = causeway_config::rules::workers(n).map_err(|e| e.to_string())?;
    Ok(n.unwrap_or_else(causeway_gateway::daemon::default_workers))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only for a person at a terminal; journald and log files
    // get plain text.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn main() {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Some(Command::Up { config, interface, workers }) => {
            causeway_gateway::daemon::up(&config, interface, workers, causeway_gateway::daemon::report_ready)
        }
        Some(Command::Check { config }) => {
            causeway_gateway::daemon::check(&config).map(|summary| println!("{summary}"))
        }
        Some(Command::CleanupSockets { daemon, paths }) => {
            causeway_gateway::privileges::cleanup_after_daemon(daemon, &paths);
            Ok(())
        }
        None => match cli.ifname {
            Some(name) if causeway_gateway::daemon::command_not_interface(&name).is_some() => {
                use clap::CommandFactory;
                let why = causeway_gateway::daemon::command_not_interface(&name).unwrap_or_default();
                Cli::command().error(clap::error::ErrorKind::InvalidValue, why).exit()
            }
            Some(name) if cli.foreground => {
                causeway_gateway::daemon::userspace(&name, causeway_gateway::daemon::report_ready)
            }
            // One line on stderr, which wireguard-go does not print: a
            // mistyped command (`causewayd upp`) is an interface name, and
            // without it a daemon would come up unseen.
            Some(name) => causeway_gateway::daemon::detach(std::slice::from_ref(&name)).map(|pid| {
                eprintln!(
                    "causewayd: interface {name} is up, served in the background (pid {pid}); `tunctl show {name}`"
                );
            }),
            None => {
                // A usage error, so on stderr, as tunctl's are.
                use clap::CommandFactory;
                eprint!("{}", Cli::command().render_help());
                std::process::exit(2);
            }
        },
    };
    // The library's errors carry their causes; anyhow prints the chain.
    if let Err(e) = result.map_err(anyhow::Error::from) {
        causeway_gateway::daemon::report_error(e.as_ref());
        eprintln!("causewayd: {e:#}");
        std::process::exit(1);
    }
}
