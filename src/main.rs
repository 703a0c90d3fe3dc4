//! The `evmesh` command: `serve`, `validate`, `send`, and `apply`/`delete`/`get` against a
//! running evmesh.

mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cloudevents::{EventBuilder, EventBuilderV10};
use evmesh::{Mesh, Options, QUICKSTART_YAML};
use evmesh_config::MeshConfig;

/// How the client commands reach a running evmesh.
#[derive(clap::Args)]
struct Connect {
    /// The evmesh server (its --listen address).
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EVMESH_SERVER")]
    server: String,
    /// Bearer token for writes (default: read from --token-file, else DATA_DIR/admin-token).
    #[arg(long, env = "EVMESH_TOKEN")]
    token: Option<String>,
    /// A file holding the token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The server's data dir, where it wrote its admin token.
    #[arg(long, default_value = "./evmesh-data")]
    data_dir: PathBuf,
}

impl Connect {
    fn server(self) -> anyhow::Result<client::Server> {
        client::Server::new(self.server, self.token, self.token_file, &self.data_dir)
    }
}

/// Connection limits, timeouts and the append bound of `serve` (durations like `10s`, `500ms`,
/// `2m`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Time a client has to send a complete request head, from its first byte (or from
    /// connecting); the connection is closed after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    header_read_timeout: Duration,
    /// Time a keep-alive connection may stay idle between requests.
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    idle_timeout: Duration,
    /// Time a client has to send a request body after its head (408 after it).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog (default: half the
    /// open-file limit, at most 10000).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most bytes of events waiting to be written to disk; beyond it ingress answers 503 with
    /// Retry-After instead of queueing more.
    #[arg(long, default_value_t = evmesh_store::DEFAULT_MAX_QUEUED_BYTES)]
    max_append_queue_bytes: usize,
    /// fjall's block cache, in MiB (decoded table blocks; reads of fjall's tables go through
    /// it: with the segments engine, those of the metadata and checkpoints only).
    #[arg(long, default_value_t = evmesh_store::DEFAULT_CACHE_BYTES >> 20)]
    store_cache_mb: u64,
    /// fjall's write buffer, in MiB: appends collect in memory up to this size, then are
    /// written out as a table (about twice this is in memory while one is written out).
    #[arg(long, default_value_t = evmesh_store::DEFAULT_WRITE_BUFFER_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..))]
    store_write_buffer_mb: u64,
    /// fjall's journal budget on disk, in MiB (at least 64): bounds what a restart replays.
    #[arg(long, default_value_t = evmesh_store::DEFAULT_JOURNAL_BYTES >> 20, value_parser = clap::value_parser!(u64).range(64..))]
    store_journal_mb: u64,
    /// glibc malloc arenas (Linux with glibc): `serve` starts itself once more with
    /// `GLIBC_TUNABLES=glibc.malloc.arena_max=N:glibc.malloc.trim_threshold=131072`, unless
    /// GLIBC_TUNABLES is set already (and, in a build with jemalloc, with `_RJEM_MALLOC_CONF`
    /// for jemalloc's background purging, unless that is set); 0 keeps the allocators'
    /// defaults (glibc: 8 arenas per core, a trim threshold that grows, under which RSS crept
    /// up while the live heap stayed flat). glibc's malloc serves C libraries (librdkafka) and
    /// builds without jemalloc. Default: one per core the process may run on (its CPU
    /// affinity), at least 2; fewer arenas than cores serialise allocation.
    #[arg(long)]
    malloc_arenas: Option<usize>,
}

impl LimitArgs {
    fn server_limits(&self) -> evmesh::ServerLimits {
        evmesh::ServerLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_read_timeout: self.body_read_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// Parses `500ms`, `10s`, `2m` or `1h` (a bare number is seconds).
fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 500ms, 10s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

#[derive(Parser)]
#[command(
    name = "evmesh",
    version,
    about = "Knative Eventing without Kubernetes"
)]
struct Cli {
    /// Log line format on stderr: `text` (colours only on a terminal) or `json`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EVMESH_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging to stderr: `EVMESH_LOG` (default `info`); the storage engine's INFO chatter is off
/// unless `EVMESH_LOG` names it.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let user = std::env::var("EVMESH_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("fjall=warn,lsm_tree=warn,{user}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

#[derive(Subcommand)]
// Parsed once at start; boxing `Serve`'s many flags would only make the code noisier.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve the brokers and triggers of the given Knative YAML (the quickstart when no -f).
    Serve {
        /// A YAML file or a directory of *.yaml/*.yml files; repeatable.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Address for ingress, admin API and health.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where events and delivery progress are stored.
        #[arg(long, default_value = "./evmesh-data")]
        data_dir: PathBuf,
        /// Storage engine: segments (default: events in segment files, the rest in fjall),
        /// fjall, redb or sled (redb and sled when built with the cargo features of their names).
        #[arg(long)]
        storage_engine: Option<evmesh_store::EngineKind>,
        /// Largest accepted event, in bytes (413 above).
        #[arg(long, default_value_t = evmesh_broker::ingress::DEFAULT_MAX_EVENT_SIZE)]
        max_event_size: usize,
        /// URL template for refs to kinds evmesh does not serve.
        #[arg(long, default_value = evmesh_config::DEFAULT_URL_TEMPLATE)]
        url_template: String,
        /// Keep events in a broker's log at least this long (ISO-8601, e.g. P7D).
        #[arg(long, default_value = "P7D")]
        retention: String,
        /// Also delete the oldest events once a broker's log holds more than this many bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// How often retention runs (ISO-8601).
        #[arg(long, default_value = "PT60S")]
        retention_interval: String,
        /// Deliveries in flight per trigger.
        #[arg(long, default_value_t = 100)]
        max_in_flight: usize,
        /// PEM file of a private CA to trust for https subscribers and dead-letter sinks
        /// (besides the web PKI roots).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// File holding the bearer token the admin API requires for writes (default: a random
        /// token kept in DATA_DIR/admin-token, mode 0600).
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Do not poll the -f files for changes (re-read them on SIGHUP only).
        #[arg(long)]
        no_watch: bool,
        /// Kubernetes cluster ApiServerSources watch (the kubeconfig's current context). Without
        /// it (and outside a cluster) they watch evmesh's own API.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Channel kind of Channels, Sequences and Parallels without channelTemplate (as
        /// Knative's default-ch-webhook clusterDefault; such a ConfigMap in the YAML wins).
        #[arg(long, default_value = "InMemoryChannel")]
        default_channel: evmesh_config::ChannelKind,
        /// NATS server of NatsJetStreamChannels (connected to only when one runs).
        #[arg(long, env = "EVMESH_NATS_URL", default_value = evmesh_channels::DEFAULT_NATS_URL)]
        nats_url: String,
        /// Kafka bootstrap servers of KafkaChannels and Kafka-class Brokers (`host:port,...`).
        #[arg(long, env = "EVMESH_KAFKA_BOOTSTRAP")]
        kafka_bootstrap_servers: Option<String>,
        /// How long a produce to Kafka may wait for its acknowledgement before the event is
        /// answered 503.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        kafka_produce_timeout: Duration,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Create or update resources in a running evmesh (like `kubectl apply -f`).
    Apply {
        /// A YAML file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Namespace for resources that name none.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Delete resources from a running evmesh: `-f FILE`, or `KIND NAME...`.
    Delete {
        /// A YAML file, a directory, or - for standard input; repeatable.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// KIND NAME... (e.g. `trigger orders`).
        args: Vec<String>,
        /// Namespace (default `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Show resources of a running evmesh: `get KIND [NAME]`.
    Get {
        /// Kind: brokers, triggers, eventdisplays (plural, singular or kind name).
        kind: String,
        /// One resource.
        name: Option<String>,
        /// Namespace (default `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format: yaml or json (a table when absent).
        #[arg(short = 'o', long)]
        output: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print a kubeconfig for a running evmesh (cluster, user with the admin token and context
    /// all named `evmesh`), so the real kubectl works against it:
    /// `evmesh kubeconfig > kc && kubectl --kubeconfig kc get triggers`.
    Kubeconfig {
        /// Default namespace of the context.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Check Knative YAML; prints each problem with file, line and field.
    Validate {
        /// A YAML file or a directory; repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Send one CloudEvent (binary mode), like `kn event send`.
    Send {
        /// Target URL, e.g. http://127.0.0.1:8080/default/default.
        #[arg(long)]
        to: String,
        /// ce-type.
        #[arg(long = "type")]
        ty: String,
        /// ce-source.
        #[arg(long)]
        source: String,
        /// ce-id (a random UUID by default).
        #[arg(long)]
        id: Option<String>,
        /// JSON data.
        #[arg(long)]
        data: Option<String>,
        /// Extension attribute name=value; repeatable.
        #[arg(long = "extension", short = 'e')]
        extensions: Vec<String>,
    },
}

/// One glibc arena per core this process may run on (`taskset`, cgroup cpusets), at least 2.
fn default_malloc_arenas() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn main() -> ExitCode {
    evmesh::kinds::install();
    evmesh_broker::tls::install_provider();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Command::Serve { limits, .. } = &cli.command {
        tune_malloc(limits.malloc_arenas.unwrap_or_else(default_malloc_arenas));
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The allocator the `evmesh` binary uses on Linux: jemalloc. With glibc's malloc, threads
/// freeing what others allocated (an event is decoded by ingress, delivered and dropped
/// elsewhere) waited on arena locks: on 2 cores end-to-end deliveries were 30–45% lower, on 8
/// cores a fixed number of arenas halved ingress (BENCHMARKS.md §10).
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
mod jemalloc {
    #[global_allocator]
    static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// jemalloc's run-time settings (this build's jemalloc reads them under this name).
    pub(crate) const CONF: &str = "_RJEM_MALLOC_CONF";

    /// What `serve` sets unless the operator set it: a background thread gives freed pages back
    /// after a second (jemalloc's default is 10 s, and only as it allocates), so RSS follows
    /// the live heap (BENCHMARKS.md §9).
    pub(crate) const SETTINGS: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}

/// Allocator settings that must be in the environment before the program starts: this starts
/// the same program again (same pid, arguments and environment) with them added.
/// - glibc's malloc (C libraries, such as librdkafka; and evmesh itself where jemalloc is not
///   built in) keeps freed memory in up to 8 arenas per core and raises its trim threshold as
///   large blocks come and go, so a long `serve` run's RSS grew although its live heap did not
///   (BENCHMARKS.md §9): `GLIBC_TUNABLES` keeps it to `arenas` arenas and gives back free
///   memory above 128 KiB at the top of a heap.
/// - jemalloc: [`jemalloc::SETTINGS`].
///
/// Each is left alone when the operator set it already (or this did); nothing is set when
/// `arenas` is 0; where the program cannot be started again it runs on with the defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc(arenas: usize) {
    use std::os::unix::process::CommandExt;
    if arenas == 0 {
        return;
    }
    let mut settings = Vec::new();
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        settings.push((
            "GLIBC_TUNABLES",
            format!("glibc.malloc.arena_max={arenas}:glibc.malloc.trim_threshold=131072"),
        ));
    }
    #[cfg(all(feature = "jemalloc", not(target_env = "musl")))]
    if std::env::var_os(jemalloc::CONF).is_none() {
        settings.push((jemalloc::CONF, jemalloc::SETTINGS.to_string()));
    }
    if settings.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args).envs(settings).exec();
    tracing::warn!("could not start again with malloc settings ({err}); the defaults apply");
}

/// Other platforms and C libraries keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc(_arenas: usize) {}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Kubeconfig { namespace, connect } => {
            print!(
                "{}",
                client::kubeconfig(&connect.server()?, namespace.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            to,
            ty,
            source,
            id,
            data,
            extensions,
        } => send(to, ty, source, id, data, extensions).await,
        Command::Apply {
            files,
            namespace,
            connect,
        } => client::apply(&connect.server()?, &files, namespace.as_deref()).await,
        Command::Delete {
            files,
            args,
            namespace,
            connect,
        } => client::delete(&connect.server()?, &files, &args, namespace.as_deref()).await,
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            connect,
        } => {
            client::get(
                &connect.server()?,
                &kind,
                name.as_deref(),
                namespace.as_deref(),
                all_namespaces,
                output.as_deref(),
            )
            .await
        }
        Command::Serve {
            files,
            listen,
            data_dir,
            storage_engine,
            max_event_size,
            url_template,
            retention,
            retention_bytes,
            retention_interval,
            max_in_flight,
            admin_token_file,
            no_watch,
            kubeconfig,
            ca_file,
            default_channel,
            nats_url,
            kafka_bootstrap_servers,
            kafka_produce_timeout,
            limits,
        } => {
            let mesh = if files.is_empty() {
                tracing::info!(
                    "no -f given: serving the quickstart (a broker `default` with a trigger to the event display)"
                );
                Mesh::from_yaml(QUICKSTART_YAML)
            } else {
                Mesh::from_paths(&files)
            };
            let mesh = match mesh {
                Ok(c) => c,
                Err(e) => {
                    for w in &e.warnings {
                        eprintln!("{w}");
                    }
                    eprintln!("{}", e.render());
                    return Ok(ExitCode::FAILURE);
                }
            };
            // Configuration warnings are logged by the library at start.
            let admin_token = admin_token(admin_token_file.as_deref(), &data_dir)?;
            let mut options = Options {
                admin_token: Some(admin_token),
                data_dir,
                max_event_size,
                url_template: Some(url_template),
                default_channel: Some(default_channel),
                nats_url,
                kafka_bootstrap_servers,
                kafka_produce_timeout,
                server: limits.server_limits(),
                store: evmesh_store::StoreOptions {
                    max_queued_bytes: limits.max_append_queue_bytes,
                    cache_bytes: limits.store_cache_mb << 20,
                    write_buffer_bytes: limits.store_write_buffer_mb << 20,
                    journal_bytes: limits.store_journal_mb << 20,
                },
                ..Options::default()
            };
            if let Some(e) = storage_engine {
                options.engine = e;
            }
            options.kube_api = kube_api(kubeconfig);
            options.service.max_in_flight = max_in_flight;
            options.service.ca_file = ca_file;
            options.service.retention.max_age =
                Some(evmesh_config::parse_duration(&retention).map_err(anyhow::Error::msg)?);
            options.service.retention.max_bytes = retention_bytes;
            options.service.retention_interval =
                evmesh_config::parse_duration(&retention_interval).map_err(anyhow::Error::msg)?;
            if options.service.retention_interval.is_zero() {
                bail!("--retention-interval must be above zero");
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let running = std::sync::Arc::new(mesh.options(options).start(listener).await?);
            // Signal handlers are in place before "listening" is logged: a SIGTERM or SIGHUP
            // right after start must not kill the process by the signal's default action.
            let shutdown_signal = ShutdownSignal::install();
            let watcher = (!files.is_empty())
                .then(|| tokio::spawn(watch_files(running.clone(), !no_watch, hangup_signal())));
            tracing::info!(
                "evmesh listening on {} (ingress {}/<namespace>/<broker>)",
                running.local_addr(),
                running.url().as_str().trim_end_matches('/')
            );
            shutdown_signal.wait().await;
            tracing::info!("shutting down: draining deliveries");
            if let Some(w) = watcher {
                w.abort();
                let _ = w.await;
            }
            match std::sync::Arc::try_unwrap(running) {
                Ok(running) => running.shutdown().await,
                Err(_) => bail!("internal error: the running mesh is still shared at shutdown"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The cluster ApiServerSources watch: `--kubeconfig`/`KUBECONFIG`, else the cluster evmesh runs
/// in (as client-go's in-cluster config: `KUBERNETES_SERVICE_HOST` and a service account token),
/// else none (evmesh's own API).
fn kube_api(kubeconfig: Option<PathBuf>) -> Option<evmesh::KubeApi> {
    if let Some(path) = kubeconfig.filter(|p| !p.as_os_str().is_empty()) {
        return Some(evmesh::KubeApi::Kubeconfig(path));
    }
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
    in_cluster.then_some(evmesh::KubeApi::InCluster)
}

/// The admin token: from `--admin-token-file`, else the one kept in `DATA_DIR/admin-token`
/// (made at random, mode 0600, on first start).
fn admin_token(
    file: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading --admin-token-file {}", f.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("--admin-token-file {} is empty", f.display());
        }
        return Ok(t);
    }
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    tracing::info!("admin token written to {}", path.display());
    Ok(token)
}

/// Re-reads the served files on SIGHUP and when one of them changes on disk, and applies the
/// difference.
/// SIGHUP as a stream (registered at once, so that SIGHUP no longer terminates the process);
/// `None` where there is no SIGHUP or it cannot be registered.
#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn watch_files(running: std::sync::Arc<evmesh::RunningMesh>, poll: bool, hup: Hangup) {
    let stamp = |files: &[PathBuf]| -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata(f).ok();
                (
                    f.clone(),
                    m.as_ref().and_then(|m| m.modified().ok()),
                    m.map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect()
    };
    let mut seen = stamp(&running.watched_files());
    #[cfg(unix)]
    let mut hup = hup;
    #[cfg(not(unix))]
    let _ = hup;
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let reason = tokio::select! {
            _ = hup_recv => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(1)), if poll => {
                let now = stamp(&running.watched_files());
                if now == seen { continue; }
                "files changed"
            }
        };
        seen = stamp(&running.watched_files());
        match running.reload().await {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                tracing::info!("configuration reloaded ({reason})");
            }
            Err(e) => tracing::error!(
                "configuration not reloaded ({reason}); the running one stays:\n{}",
                e.render()
            ),
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered when installed.
struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            ShutdownSignal {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn on(s: Option<&mut tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            let (mut term, mut int) = (self.term, self.int);
            if term.is_some() || int.is_some() {
                tokio::select! {
                    _ = on(term.as_mut()) => {}
                    _ = on(int.as_mut()) => {}
                }
                return;
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    match MeshConfig::from_paths(files) {
        Ok(mesh) => {
            for w in &mesh.warnings {
                println!("{w}");
            }
            println!(
                "ok: {} broker(s), {} trigger(s)",
                mesh.brokers.len(),
                mesh.triggers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for w in &e.warnings {
                println!("{w}");
            }
            for err in &e.errors {
                println!("{err}");
            }
            println!("{} error(s)", e.errors.len());
            ExitCode::FAILURE
        }
    }
}

async fn send(
    to: String,
    ty: String,
    source: String,
    id: Option<String>,
    data: Option<String>,
    extensions: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let mut b = EventBuilderV10::new()
        .id(id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
        .ty(ty)
        .source(source)
        .time(chrono::Utc::now());
    for ext in extensions {
        let Some((k, v)) = ext.split_once('=') else {
            bail!("--extension {ext:?}: expected name=value");
        };
        b = b.extension(k, v);
    }
    if let Some(d) = data {
        let json: serde_json::Value =
            serde_json::from_str(&d).with_context(|| format!("--data is not JSON: {d}"))?;
        b = b.data("application/json", json);
    }
    let event = b.build().context("building the event")?;
    let enc = evmesh_broker::codec::encode_binary(event)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_backend_preconfigured(evmesh_broker::tls::client_config(&[])?)
        .build()?;
    let resp = client
        .post(&to)
        .headers(enc.headers)
        .body(enc.body)
        .send()
        .await
        .with_context(|| format!("sending to {to}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), body.trim());
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
