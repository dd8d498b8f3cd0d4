//! `moonjail serve`: the HTTP service, and `moonjail keys`: its API keys. A thin shell
//! over `moonjail_http`: flags to a `Config`, then serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use moonjail::Profile;
use moonjail_http::{Auth, Config, KeyStore, RateLimit, Server};

use crate::args::{duration, size, SandboxArgs};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on, IP:PORT (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The API key file (see `moonjail keys add`). Required unless --insecure-no-auth.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Accept requests without a key (as the key "anonymous"). Only on a loopback
    /// address: refused on any other.
    #[arg(long, conflicts_with = "keys")]
    pub insecure_no_auth: bool,
    /// Requests executed at once (runs and session calls); with --isolate, also the
    /// worker pool's size. Default: the number of CPUs; with --isolate, half as many
    /// again (an isolated run is relayed between a thread and its worker process, and
    /// one executor per core leaves a core idle in each handoff).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Requests that may wait for an executor; past them, 503 with Retry-After at once.
    /// Default: 4 per worker.
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// The largest request body; larger is a 413.
    #[arg(long, value_name = "SIZE", default_value = "2MiB")]
    pub max_body: String,
    /// Open sessions in all.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_sessions: usize,
    /// Open sessions per key (429 past it).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_sessions_per_key: usize,
    /// How long an unused session stays open.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub session_idle: String,
    /// With --defer-tool: how long a run suspended at a deferred tool call waits for its
    /// answer (POST /v1/runs/ID/resume) before it is given up; it ends as suspended and
    /// its id is a 404 from then on.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub suspend_timeout: String,
    /// With --defer-tool: suspended runs held in all, each a live Lua state (with
    /// --isolate, in its own worker process, outside the --workers count). A run that
    /// suspends past it is given up at once (it ends as suspended) and answered 503,
    /// kind too_many_suspended.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_suspended: usize,
    /// With --defer-tool: suspended runs held per key. A run that suspends past it is
    /// given up at once and answered 429, kind too_many_suspended.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_suspended_per_key: usize,
    /// Requests one key may have in flight at once (429 past it).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub key_concurrency: usize,
    /// Requests per second per key, a token bucket (429 with Retry-After and RateLimit-*
    /// headers past it). Default: no rate limit.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// With --rate: the bucket's size, requests allowed at once. Default: --rate, at
    /// least 1.
    #[arg(long, value_name = "N", requires = "rate")]
    pub burst: Option<u32>,
    /// Profiles a request may name, comma-separated. Default: all built-in ones.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub profiles: Vec<String>,
    /// How long a whole request may take, body upload included (408 past it): a
    /// backstop behind each run's own deadline. Default: --timeout plus 30 s (5 minutes
    /// without a timeout).
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// How long a client may take to send a request's head (request line and headers),
    /// counted from its first byte; past it the connection is closed without an answer.
    /// Against clients that trickle their headers to hold connections (slowloris).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub header_timeout: String,
    /// How long a connection may stay open with no request in progress (once accepted,
    /// and between an answer and the next request); past it, it is closed. Keep it longer
    /// than the idle timeout of a load balancer in front.
    #[arg(long, value_name = "DURATION", default_value = "75s")]
    pub idle_timeout: String,
    /// Connections open at once; past it, new ones wait in the listen backlog until one
    /// closes. Keep it below the file-descriptor limit (`ulimit -n`).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_connections: usize,
    /// How long requests in flight get to finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub grace: String,
    /// The sandbox requests run in. Its limits are the most a request may ask for; its
    /// profile is the one a request gets when it names none.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Builds the config the flags describe.
fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    let workers = match args.workers {
        Some(0) => bail!("--workers: must be at least 1"),
        Some(n) => n,
        None => moonjail_http::default_workers(args.sandbox.isolate),
    };
    let auth = match (&args.keys, args.insecure_no_auth) {
        (_, true) => {
            if !args.listen.ip().is_loopback() {
                bail!(
                    "--insecure-no-auth: refused on {}, which is not a loopback address \
                     (anyone who can reach it could run code); use --keys FILE",
                    args.listen
                );
            }
            Auth::None
        }
        (Some(path), false) => {
            let store = KeyStore::load(path)?;
            if store.is_empty() {
                bail!(
                    "--keys {}: no keys; create one with `moonjail keys add NAME --keys {}`",
                    path.display(),
                    path.display()
                );
            }
            Auth::Keys(store)
        }
        (None, false) => bail!(
            "give --keys FILE (create keys with `moonjail keys add NAME --keys FILE`), or \
             --insecure-no-auth on a loopback address"
        ),
    };
    // --defer-tool is accepted: a run that calls a deferred tool is held in memory, to
    // be resumed over HTTP. Every executor keeps a worker ready.
    let sandbox = args.sandbox.build_pooled(false, false, workers, workers)?;
    let mut config = Config::new(sandbox);
    config.auth = auth;
    config.workers = workers;
    config.queue = args.queue.unwrap_or(workers * 4);
    config.max_body_bytes = size(&args.max_body)
        .context("--max-body")?
        .context("--max-body: a body limit is required")?;
    config.max_sessions = args.max_sessions;
    config.max_sessions_per_key = args.max_sessions_per_key;
    config.session_idle = duration(&args.session_idle)
        .context("--session-idle")?
        .context("--session-idle: an idle timeout is required")?;
    config.suspend_timeout = duration(&args.suspend_timeout)
        .context("--suspend-timeout")?
        .context("--suspend-timeout: a suspend timeout is required")?;
    config.max_suspended = args.max_suspended;
    config.max_suspended_per_key = args.max_suspended_per_key;
    config.key_concurrency = args.key_concurrency;
    config.rate_limit = args.rate.map(|per_second| RateLimit {
        per_second,
        burst: args
            .burst
            .unwrap_or_else(|| (per_second.ceil() as u32).max(1)),
    });
    if !args.profiles.is_empty() {
        config.profiles = args
            .profiles
            .iter()
            .map(|name| name.trim().parse::<Profile>())
            .collect::<Result<_, _>>()
            .context("--profiles")?;
    }
    config.shutdown_grace = duration(&args.grace)
        .context("--grace")?
        .unwrap_or_default();
    if let Some(text) = &args.request_timeout {
        config.request_timeout = duration(text)
            .context("--request-timeout")?
            .context("--request-timeout: a request timeout is required")?;
    }
    config.header_timeout = duration(&args.header_timeout)
        .context("--header-timeout")?
        .context("--header-timeout: a header timeout is required")?;
    config.idle_timeout = duration(&args.idle_timeout)
        .context("--idle-timeout")?
        .context("--idle-timeout: an idle timeout is required")?;
    config.max_connections = args.max_connections;
    config.validate()?;
    Ok(config)
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MOONJAIL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("moonjail_http=info,moonjail=warn")
            }),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Serves until SIGTERM or SIGINT, then exits 0 once requests in flight have finished
/// (or the grace period is over).
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = config(&args)?;
    let runtime = moonjail_http::runtime(&config)?;
    runtime.block_on(async {
        let server = Server::bind(config, args.listen).await?;
        let addr = server.local_addr()?;
        tracing::info!(target: "moonjail_http", %addr, isolated = args.sandbox.isolate, "listening");
        // For scripts and tests that start the service on port 0.
        eprintln!("moonjail: listening on http://{addr}");
        // Its last line, "stopped", carries the stop's tally.
        server.run(moonjail_http::shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // Blocking threads still running a script past the grace period are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key named NAME, print it once on stdout, and store only its SHA-256 in
    /// the key file (created, readable by its owner only, if missing).
    Add {
        /// 1 to 64 letters, digits, '-', '_' or '.'; shown in logs and metrics.
        name: String,
        /// The key file.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
    /// List the names of the keys in the key file.
    List {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
    /// Remove the key named NAME (a running `serve` keeps accepting it until restarted).
    Remove {
        /// The key's name.
        name: String,
        /// The key file.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
}

/// `moonjail keys ...`.
pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Add { name, keys } => {
            let mut store = KeyStore::load(&keys)?;
            let key = store.add(&name)?;
            store.save(&keys)?;
            println!("{key}");
            eprintln!(
                "moonjail: key {name:?} added to {}; it is shown only now (the file keeps \
                 its hash): send it as `Authorization: Bearer KEY`",
                keys.display()
            );
        }
        KeysCommand::List { keys } => {
            let store = KeyStore::load(&keys)?;
            for name in store.names() {
                println!("{name}");
            }
        }
        KeysCommand::Remove { name, keys } => {
            let mut store = KeyStore::load(&keys)?;
            store.remove(&name)?;
            store.save(&keys)?;
            eprintln!("moonjail: key {name:?} removed from {}", keys.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    /// `serve`'s flags alone, parsed as the command line would.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config_of(flags: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"];
        argv.extend_from_slice(flags);
        config(&Flags::try_parse_from(argv)?.serve)
    }

    #[test]
    fn every_flag_reaches_the_service_config() {
        let c = config_of(&[
            "--workers",
            "3",
            "--queue",
            "7",
            "--max-body",
            "64KiB",
            "--max-sessions",
            "9",
            "--max-sessions-per-key",
            "4",
            "--session-idle",
            "90s",
            "--suspend-timeout",
            "2m",
            "--max-suspended",
            "11",
            "--max-suspended-per-key",
            "5",
            "--key-concurrency",
            "6",
            "--rate",
            "2.5",
            "--burst",
            "8",
            "--profiles",
            "standard,aos",
            "--grace",
            "3s",
            "--request-timeout",
            "40s",
            "--header-timeout",
            "4s",
            "--idle-timeout",
            "50s",
            "--max-connections",
            "99",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!((c.workers, c.queue, c.max_body_bytes), (3, 7, 64 << 10));
        assert_eq!((c.max_sessions, c.max_sessions_per_key), (9, 4));
        assert_eq!(c.session_idle, Duration::from_secs(90));
        assert_eq!(c.suspend_timeout, Duration::from_secs(120));
        assert_eq!((c.max_suspended, c.max_suspended_per_key), (11, 5));
        assert_eq!(c.key_concurrency, 6);
        let rate = c.rate_limit.unwrap();
        assert_eq!((rate.per_second, rate.burst), (2.5, 8));
        assert_eq!(c.profiles, vec![Profile::Standard, Profile::Aos]);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.request_timeout, Duration::from_secs(40));
        assert_eq!(c.header_timeout, Duration::from_secs(4));
        assert_eq!(c.idle_timeout, Duration::from_secs(50));
        assert_eq!(c.max_connections, 99);
        assert_eq!(c.sandbox.limits().timeout, Some(Duration::from_secs(2)));
        assert!(matches!(c.auth, Auth::None));
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = config_of(&["--timeout", "2s"]).unwrap();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(c.workers, cpus);
        assert_eq!(c.queue, cpus * 4);
        assert_eq!(c.max_body_bytes, moonjail_http::DEFAULT_MAX_BODY);
        assert!(c.rate_limit.is_none());
        assert_eq!(c.profiles, Profile::ALL.to_vec());
        // The request timeout backs the run's own deadline up by 30 s.
        assert_eq!(c.request_timeout, Duration::from_secs(32));
        // --rate alone: a bucket of the rate, at least 1.
        let c = config_of(&["--rate", "0.5"]).unwrap();
        assert_eq!(c.rate_limit.unwrap().burst, 1);
        let c = config_of(&["--rate", "3.2"]).unwrap();
        assert_eq!(c.rate_limit.unwrap().burst, 4);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (flags, flag) in [
            (&["--workers", "0"][..], "--workers"),
            (&["--profiles", "standard,nope"][..], "--profiles"),
            (&["--session-idle", "soon"][..], "--session-idle"),
            (&["--max-body", "lots"][..], "--max-body"),
        ] {
            let error = format!("{:#}", config_of(flags).unwrap_err());
            assert!(error.contains(flag), "{flags:?}: {error}");
        }
    }
}
