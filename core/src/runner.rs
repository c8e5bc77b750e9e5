//! A real launch on Docker, after [`crate::prepare::prepare`]: orphan probe, keys, images,
//! bring-up, attach, teardown. Whatever happens after the probe, teardown runs and the logs
//! are kept.

use crate::docker::{self, DockerError, attach, down, images, inventory, project, up, watch};
use crate::keys::KeyError;
use crate::prepare::Prepared;
use crate::verify;
use bollard::Docker;
use bottle_contract::layout;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a launch should behave.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// A one-off command instead of the agent's default.
    pub command: Option<Vec<String>>,
    /// Keep the state dir even when the run succeeds.
    pub keep_state: bool,
    /// How long to wait for health checks.
    pub health_timeout: Duration,
    /// The base image of the bundle.
    pub base_image: String,
    /// Whether the escape suite runs (`bottle verify`, `bottle run --verify`).
    pub verify: verify::Mode,
    /// The run's clock (`-v` logs each phase).
    pub phases: std::sync::Arc<crate::phases::Phases>,
    /// The host env, for the secrets the bundle and the agent get at launch.
    pub env: crate::hostenv::HostEnv,
    /// What runs the bottle ([`crate::driver::Driver::for_backend`] of its backend).
    pub driver: crate::driver::Driver,
    /// How often the audit ledger is written and sealed while the agent runs (the final seal
    /// comes at teardown): a run that is killed still leaves its record up to there.
    pub ledger_seal_every: Duration,
    /// bottle's own settings (the address pool of its networks).
    pub config: crate::config::BottleConfig,
}

/// [`LaunchOptions::ledger_seal_every`] unless `BOTTLE_LEDGER_SEAL_SECS` says otherwise.
pub const LEDGER_SEAL_EVERY: Duration = Duration::from_secs(600);

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// Minting keys failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A native driver failed (its message is one line that says what to do).
    #[error(transparent)]
    Native(#[from] crate::driver::native::NativeError),
    /// The agent's layer over the working dir could not be made.
    #[error(transparent)]
    Layer(#[from] crate::workdir::layer::LayerError),
    /// The state dir could not be written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The backend cannot be launched here.
    #[error("{0}")]
    Unsupported(String),
    /// Interrupted by a signal; teardown ran.
    #[error("interrupted by {0}; the bottle was torn down")]
    Interrupted(&'static str),
    /// The sidecar bundle kept dying during the run; teardown ran.
    #[error(transparent)]
    BundleLost(#[from] watch::BundleLost),
}

impl LaunchError {
    /// The exit code for this failure (128 + signal for interruptions).
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Interrupted("SIGINT") => 130,
            LaunchError::Interrupted(_) => 143,
            LaunchError::BundleLost(_) => watch::BUNDLE_LOST_EXIT,
            _ => 1,
        }
    }
}

/// The result of a launch that got as far as running the agent.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The agent command's exit code.
    pub exit_code: i64,
    /// Where the merged logs are.
    pub log_file: PathBuf,
    /// Whether the state dir was kept.
    pub state_kept: bool,
    /// The escape suite's report, when it ran.
    pub report: Option<verify::Report>,
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
///
/// The handlers are installed when this is called, not when the future is first polled, and
/// one future is kept for the whole launch: a signal that arrives between two `select!`s is
/// held for the next one instead of being lost.
fn interrupted() -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

/// The launch's one interrupt: a signal future kept for the whole launch ([`interrupted`]), and
/// the one way a phase waits on it.
struct Interrupt(std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>);

impl Interrupt {
    /// Install the handlers now.
    fn new() -> Self {
        Interrupt(Box::pin(interrupted()))
    }

    /// `phase`'s result, unless a signal comes first ([`LaunchError::Interrupted`]); what the
    /// phase made is left for the teardown that follows.
    async fn or_stop<T, E: Into<LaunchError>>(
        &mut self,
        phase: impl Future<Output = Result<T, E>>,
    ) -> Result<T, LaunchError> {
        tokio::select! {
            r = phase => r.map_err(Into::into),
            sig = &mut self.0 => Err(LaunchError::Interrupted(sig)),
        }
    }
}

/// Fail if a container or project of this slug exists already.
pub async fn orphan_probe(docker: &Docker, slug: &str, project: &str) -> Result<(), DockerError> {
    let bundle = format!("bottle-sidecars-{slug}");
    if inventory::container_exists(docker, &bundle).await? {
        let ours = inventory::containers(docker, Some(slug))
            .await?
            .iter()
            .any(|c| c.name == bundle);
        return Err(if ours {
            DockerError::Orphan {
                what: format!("container {bundle}"),
                slug: slug.to_owned(),
            }
        } else {
            DockerError::NameTaken { name: bundle }
        });
    }
    if !inventory::containers(docker, Some(slug)).await?.is_empty()
        || !inventory::networks(docker, Some(slug)).await?.is_empty()
    {
        return Err(DockerError::Orphan {
            what: format!("compose project {project}"),
            slug: slug.to_owned(),
        });
    }
    Ok(())
}

/// Build the bundle image if a compose file needs it and it is missing or was built by
/// another version of bottle.
async fn ensure_bundle_image(
    docker: &Docker,
    file: &project::ComposeFile,
    opts: &LaunchOptions,
) -> Result<(), LaunchError> {
    let Some(bundle) = file.services.get(layout::BUNDLE_SERVICE) else {
        return Ok(());
    };
    if bundle.image == images::BUNDLE_IMAGE {
        ensure_sidecars_image(docker, &opts.base_image, &opts.env).await?;
    } else if !docker::images::exists(docker, &bundle.image).await? {
        return Err(
            DockerError::Host(format!("the bundle image {} is missing", bundle.image)).into(),
        );
    }
    Ok(())
}

/// [`images::BUNDLE_IMAGE`], built first when it is missing or stale; what it carries.
pub async fn ensure_sidecars_image(
    docker: &Docker,
    base_image: &str,
    env: &crate::hostenv::HostEnv,
) -> Result<images::BundleImage, DockerError> {
    let found = images::inspect_bundle(docker, images::BUNDLE_IMAGE).await?;
    if let Some(b) = found.filter(|b| b.current) {
        return Ok(b);
    }
    eprintln!(
        "building {} ({})…",
        images::BUNDLE_IMAGE,
        if found.is_some() {
            "built by another bottle version"
        } else {
            "first run"
        }
    );
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let built = images::build_sidecars(docker, base_image, env, |line| {
        if line.starts_with("Step ") {
            bar.set_message(line.to_owned());
        }
    })
    .await;
    bar.finish_and_clear();
    let built = built?;
    Ok(images::BundleImage {
        pipelock: built.pipelock,
        current: true,
    })
}

/// Whether the bottle's bundle will carry pipelock, decided before planning so the plan
/// matches what runs: `BOTTLE_PIPELOCK=present|absent` when set; otherwise, for a real run,
/// the bundle image (built first if needed), and for a dry run the image or, before one is
/// built, whether the pinned pipelock image is loaded. The note says how it was decided when
/// that was not from a built image.
pub async fn pipelock_in_bundle(
    dry_run: bool,
    base_image: &str,
    env_override: Option<&str>,
    env: &crate::hostenv::HostEnv,
) -> Result<(bool, Option<String>), LaunchError> {
    match env_override {
        Some("present") => return Ok((true, Some("BOTTLE_PIPELOCK=present".into()))),
        Some("absent") => return Ok((false, Some("BOTTLE_PIPELOCK=absent".into()))),
        Some(other) => {
            return Err(LaunchError::Unsupported(format!(
                "BOTTLE_PIPELOCK={other:?}: use `present`, `absent`, or unset it to ask the bundle image"
            )));
        }
        None => {}
    }
    if !dry_run {
        let docker = docker::connect().await?;
        return Ok((
            ensure_sidecars_image(&docker, base_image, env)
                .await?
                .pipelock,
            None,
        ));
    }
    let Ok(docker) = docker::connect().await else {
        return Ok((
            true,
            Some("assumed: Docker is not reachable to check the bundle image".into()),
        ));
    };
    if let Some(b) = images::inspect_bundle(&docker, images::BUNDLE_IMAGE)
        .await?
        .filter(|b| b.current)
    {
        return Ok((b.pipelock, None));
    }
    let pin = images::PipelockPin::configured(env)?;
    let loaded = pin.resolve(&docker).await?.is_some();
    let note = format!(
        "the bundle image is not built yet; {} is {}",
        pin.name_tag,
        if loaded { "loaded" } else { "not loaded" }
    );
    Ok((loaded, Some(note)))
}

/// Launch `p` and attach to its agent; tear everything down afterwards.
pub async fn launch(p: &Prepared, opts: &LaunchOptions) -> Result<Outcome, LaunchError> {
    let native = match &opts.driver {
        crate::driver::Driver::Docker => None,
        crate::driver::Driver::Native(d) => Some(d.clone()),
        crate::driver::Driver::Manifests => {
            return Err(LaunchError::Unsupported(format!(
                "the {} backend hands its manifests over instead of launching",
                p.plan.backend
            )));
        }
    };
    let started = crate::state::rfc3339(std::time::SystemTime::now());
    let docker = docker::connect().await?;
    let project_name = p.plan.deployment.project.clone();
    orphan_probe(&docker, &p.slug, &project_name).await?;
    opts.phases.done("Docker connected, no orphan");
    if let Some(d) = &native {
        let d = d.clone();
        let root = p
            .state_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let listed = blocking(move || d.list(&root)).await??;
        if listed.iter().any(|l| l.slug == p.slug) {
            return Err(DockerError::Orphan {
                what: format!("{} machine bottle-{}", p.plan.backend, p.slug),
                slug: p.slug.clone(),
            }
            .into());
        }
    }

    // From here on the slug is ours: whatever happens, tear down.
    let log_file = p.state_dir.join(layout::LOG_FILE);
    let (result, teardown) = match &native {
        None => {
            let result = tokio::select! {
                r = run_bottle(&docker, p, opts, &project_name) => r,
                never = ledger_checkpoints(&docker, p, opts, &started) => match never {},
            };
            opts.phases.done("the agent's command ended");
            let teardown = sweep(&docker, &p.slug, &log_file, is_interrupt(&result))
                .await
                .map_err(LaunchError::from);
            opts.phases
                .done("torn down (logs written, everything removed)");
            // Once the agent is gone, its layer holds still: its work comes back now.
            let work = match &teardown {
                Ok(()) => {
                    let discard = opts.verify == verify::Mode::Only;
                    bring_back_work(&docker, &p.state_dir, opts.env.home(), discard).await
                }
                Err(_) => Ok(()),
            };
            (result, teardown.and(work))
        }
        Some(d) => {
            let result = run_native(&docker, p, opts, d).await;
            let bundle = sweep(&docker, &p.slug, &log_file, is_interrupt(&result)).await;
            // After the bundle's logs are written: the agent's output is appended to them.
            let (d, slug, state) = (d.clone(), p.slug.clone(), p.state_dir.clone());
            let agent = blocking(move || d.down(&slug, &state)).await;
            let teardown = match (bundle, agent) {
                (Err(e), _) => Err(e.into()),
                (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(Err(e))) => Err(e.into()),
                (Ok(()), Ok(Ok(_))) => Ok(()),
            };
            (result, teardown)
        }
    };
    let logs = std::fs::read_to_string(&log_file).unwrap_or_default();
    let exit_code = result.as_ref().ok().map(|(c, _)| *c);
    if let Err(e) = write_ledger(p, opts, &started, &logs, exit_code, true) {
        eprintln!("warning: the audit ledger was not written: {e}");
    }
    let failed = result.is_err() || teardown.is_err();
    let mut state_kept = opts.keep_state || failed;
    let mut log_file = log_file;
    if !state_kept {
        match crate::state::retire(&p.state_dir) {
            Ok(archived) => log_file = archived,
            Err(e) => {
                eprintln!(
                    "warning: {e}; the state dir (it holds the bottle's CA keys) is kept: remove it by hand"
                );
                state_kept = true;
            }
        }
    }
    opts.phases.done("state dir retired");
    let (exit_code, report) = result?;
    teardown?;
    Ok(Outcome {
        exit_code,
        log_file,
        state_kept,
        report,
    })
}

/// Every [`LaunchOptions::ledger_seal_every`] while the bottle runs: the ledger so far, from
/// the live logs, sealed (an interim seal) into the state dir. Runs until dropped; a failed
/// checkpoint is logged and the next one tries again.
async fn ledger_checkpoints(
    docker: &Docker,
    p: &Prepared,
    opts: &LaunchOptions,
    started: &str,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(opts.ledger_seal_every).await;
        let containers = match docker::inventory::containers(docker, Some(&p.slug)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ledger checkpoint: {e}");
                continue;
            }
        };
        let logs = docker::down::merged_logs(docker, &containers).await;
        if let Err(e) = write_ledger(p, opts, started, &logs, None, false) {
            tracing::warn!("ledger checkpoint: {e}");
        }
    }
}

/// The run's audit ledger from its merged `logs`, sealed with the user's key, into the state
/// dir (kept with the logs when the dir is retired): at teardown (`last`) with the final seal,
/// during the run as a checkpoint.
fn write_ledger(
    p: &Prepared,
    opts: &LaunchOptions,
    started: &str,
    logs: &str,
    exit_code: Option<i64>,
    last: bool,
) -> Result<(), String> {
    use sha2::Digest as _;
    let config = opts
        .env
        .config_dir()
        .ok_or("there is no config dir for the audit key (set HOME or XDG_CONFIG_HOME)")?;
    let key = crate::audit::key::AuditKey::load_or_create(&config).map_err(|e| e.to_string())?;
    let plan = std::fs::read(p.state_dir.join(bottle_contract::layout::PLAN_FILE))
        .map_err(|e| format!("cannot read the plan: {e}"))?;
    let plan_sha256 = crate::audit::chain::hex(&sha2::Sha256::digest(&plan));
    let ended = crate::state::rfc3339(std::time::SystemTime::now());
    let run = crate::audit::collect::Run {
        slug: &p.slug,
        agent: &p.manifest.name,
        started,
        ended: &ended,
        plan_sha256: &plan_sha256,
        exit_code,
    };
    let host = crate::audit::collect::HostRecords {
        asked: p
            .state_dir
            .parent()
            .map(|root| crate::approvals::list(root, Some(&p.slug)))
            .unwrap_or_default(),
        decided: crate::approvals::recorded_decisions(&p.state_dir),
        // Unreadable approvals leave their records out; the chain still seals what was read.
        approved: crate::approved::Approved::load(
            &p.state_dir.join(bottle_contract::layout::APPROVED_FILE),
        )
        .unwrap_or_default(),
        journal: crate::live::journaled(&p.state_dir),
        bundle: watch::recorded(&p.state_dir),
    };
    let text = crate::audit::collect::ledger(&run, logs, &host, &key, last);
    crate::audit::collect::write(&p.state_dir, &text)
        .map_err(|e| format!("{}: {e}", p.state_dir.display()))
}

/// The value of host env `name` for a secret: the user's env, but for the hop token, which is
/// the host's own (`hop`; empty on Docker, whose agent does not carry one yet).
fn host_value<'a>(
    env: &'a crate::hostenv::HostEnv,
    hop: &'a str,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        if name == bottle_contract::names::HOP_TOKEN_HOST_ENV {
            Some(hop.to_owned())
        } else {
            env.get(name).map(str::to_owned)
        }
    }
}

/// The address of the bundle's container on its network, which a natively driven agent
/// reaches it at: the bundle file's one service on its first network.
async fn bundle_address_of(
    docker: &bollard::Docker,
    file: &bottle_contract::compose::ComposeFile,
    project: &str,
) -> Result<std::net::IpAddr, LaunchError> {
    let unsupported = |why: String| LaunchError::Unsupported(why);
    let (key, service) = file.services.iter().next().ok_or_else(|| {
        unsupported(format!(
            "{} has no service",
            crate::driver::BUNDLE_COMPOSE_FILE
        ))
    })?;
    let network = service
        .networks
        .keys()
        .next()
        .and_then(|k| file.networks.get(k))
        .ok_or_else(|| {
            unsupported(format!(
                "{}: service `{key}` is on no network of the file, so the agent could not reach it",
                crate::driver::BUNDLE_COMPOSE_FILE
            ))
        })?;
    let container = up::container_name(project, key, service);
    up::address_on(docker, &container, &network.name)
        .await?
        .ok_or_else(|| {
            unsupported(format!(
                "Docker gave {container} no address on {}; `docker inspect {container}` shows its networks",
                network.name
            ))
        })
}

/// Bring the agent's work in the layer of the bottle in `state_dir` (`cwd: mount`) back into
/// your dir and say what came back; then remove the layer. The bottle's agent must be gone.
/// `discard` (the escape suite's own run) brings nothing back. A layer that could not be read
/// stays, with the state dir, and the error says where.
pub async fn bring_back_work(
    docker: &Docker,
    state_dir: &Path,
    home: Option<PathBuf>,
    discard: bool,
) -> Result<(), LaunchError> {
    use crate::workdir::{self, layer::Layer};
    let Some(layer) = Layer::load(state_dir)? else {
        return Ok(());
    };
    let slug = state_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !discard {
        let (l, s) = (layer.clone(), slug.clone());
        let to = workdir::destinations(state_dir);
        let came = blocking(move || workdir::bring_back(&l, &s, &to, home.as_deref()))
            .await?
            .map_err(|e| {
                LaunchError::Unsupported(format!(
                    "the agent's work was not brought back into {}: {e}; it is in {} (kept with the state dir)",
                    layer.lower.display(),
                    layer.upper().display()
                ))
            })?;
        for line in came.lines(&slug) {
            eprintln!("{line}");
        }
        if !came.files.failed.is_empty() {
            // What did not come back is still in the layer: it stays, with the state dir.
            return Err(LaunchError::Unsupported(format!(
                "{} entr{} of the agent's work did not come back (above); they are in {} (kept with the state dir)",
                came.files.failed.len(),
                if came.files.failed.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                layer.upper().display()
            )));
        }
    }
    remove_layer(docker, &slug, &layer).await
}

/// Remove `layer`'s dirs; what you cannot remove (the kernel's scratch entries, owned by root;
/// files of an agent that ran as another user) goes through a root helper container.
async fn remove_layer(
    docker: &Docker,
    slug: &str,
    layer: &crate::workdir::layer::Layer,
) -> Result<(), LaunchError> {
    if std::fs::remove_dir_all(&layer.root).is_ok() {
        return Ok(());
    }
    docker::helper::empty_dir_as_root(docker, slug, images::BUNDLE_IMAGE, &layer.root).await?;
    std::fs::remove_dir_all(&layer.root).map_err(|e| {
        LaunchError::Unsupported(format!(
            "cannot remove the agent's layer {}: {e}; remove it by hand",
            layer.root.display()
        ))
    })
}

/// Whether `r` is an interrupt.
fn is_interrupt<T>(r: &Result<T, LaunchError>) -> bool {
    matches!(r, Err(LaunchError::Interrupted(_)))
}

/// Tear bottle `slug` down, its logs to `log_file`. After an interrupt, sweep once more: a
/// Docker call the interrupt cut short (a container being created) may still land after the
/// first sweep listed what exists, since the daemon finishes it though its client went away.
async fn sweep(
    docker: &Docker,
    slug: &str,
    log_file: &Path,
    interrupted: bool,
) -> Result<(), DockerError> {
    let first = down::down(docker, slug, Some(log_file)).await;
    if !interrupted {
        return first;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.and(down::down(docker, slug, None).await)
}

/// A fresh hop token: 32 random bytes, hex.
pub fn mint_hop_token() -> Result<String, LaunchError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| LaunchError::Unsupported(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Run blocking `f` (a native driver call, which may spawn an engine for minutes) off the
/// async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LaunchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LaunchError::Unsupported(format!("a driver call did not finish: {e}")))
}

/// Why a natively driven `backend` cannot give the agent the working dir as `cwd` says, if it
/// cannot: only `cwd: none` runs there for now.
pub fn natively_unsupported(cwd: crate::manifest::CwdMode, backend: &str) -> Option<String> {
    use crate::manifest::CwdMode;
    match cwd {
        CwdMode::None => None,
        CwdMode::Mount => Some(format!(
            "`cwd: mount` is not supported on the {backend} backend: its agent would write straight into your dir (a `.git` your own git would then run); set `cwd: none`, or use the docker backend, whose agent works on a layer over your dir"
        )),
        CwdMode::Copy => Some(format!(
            "`cwd: copy` is not supported on the {backend} backend yet; set `cwd: none`, or use the docker backend"
        )),
    }
}

/// Bring up a natively driven bottle: the bundle on Docker from the backend's
/// [`crate::driver::BUNDLE_COMPOSE_FILE`], the agent through the driver from the agent image
/// saved by Docker; then run the agent's command attached.
async fn run_native(
    docker: &Docker,
    p: &Prepared,
    opts: &LaunchOptions,
    driver: &std::sync::Arc<crate::driver::native::NativeDriver>,
) -> Result<(i64, Option<verify::Report>), LaunchError> {
    let backend = &p.plan.backend;
    if opts.verify != verify::Mode::Off {
        return Err(LaunchError::Unsupported(format!(
            "the escape suite runs on the docker backend only for now; run `bottle verify` without --backend {backend}"
        )));
    }
    if let Some(why) = natively_unsupported(p.manifest.cwd, backend) {
        return Err(LaunchError::Unsupported(why));
    }
    let mut stop = Interrupt::new();
    p.mint_keys()?;
    // Any local process reaches the bundle's address: only the agent's side holds this. The
    // driver fills its own copies of the agent's files.
    let hop_token = &mint_hop_token()?;
    let bundle_path = p.state_dir.join(crate::driver::BUNDLE_COMPOSE_FILE);
    // Where the agent reaches the bundle: its container's own address (nothing is published).
    let mut bundle_address = None;
    if bundle_path.exists() {
        let file = project::read(&bundle_path).map_err(DockerError::from)?;
        stop.or_stop(ensure_bundle_image(docker, &file, opts))
            .await?;
        let secrets = project::resolve_secrets(
            &file,
            &p.plan.stack.bundle_secrets,
            &[],
            host_value(&opts.env, hop_token),
        )
        .map_err(DockerError::from)?;
        let state_dir = p.state_dir.display().to_string();
        let req = up::UpRequest {
            project: &p.plan.deployment.project,
            slug: &p.slug,
            state_dir: &state_dir,
            secrets: &secrets,
            health_timeout: opts.health_timeout,
            agent: up::AgentRun {
                confinement: &p.confinement,
                user: String::new(),
                probe: None,
                layer: None,
            },
            bundle: p.manifest.bundle_resources,
            phases: &opts.phases,
            config: &opts.config,
        };
        stop.or_stop(up::up(docker, &file, &req)).await?;
        for (key, s) in &file.services {
            if let Some(h) = &s.healthcheck {
                let name = up::container_name(&p.plan.deployment.project, key, s);
                stop.or_stop(up::wait_healthy(
                    docker,
                    &name,
                    &h.test,
                    opts.health_timeout,
                ))
                .await?;
            }
        }
        bundle_address = Some(bundle_address_of(docker, &file, &p.plan.deployment.project).await?);
    }
    // The agent's image, as an archive the engine reads (no registry here or there).
    let archive = p.state_dir.join("agent-image.tar");
    stop.or_stop(images::save(docker, &p.plan.stack.agent.image, &archive))
        .await?;
    let mut up = {
        let (d, slug, state, archive, token) = (
            driver.clone(),
            p.slug.clone(),
            p.state_dir.clone(),
            archive.clone(),
            hop_token.clone(),
        );
        tokio::task::spawn_blocking(move || {
            d.up(&slug, &state, Some(&archive), Some(&token), bundle_address)
        })
    };
    let up = tokio::select! {
        r = &mut up => r,
        sig = &mut stop.0 => {
            // The engine call cannot be cut short (it is bounded by the driver's deadlines):
            // let it finish, so the teardown that follows finds what it made.
            eprintln!("bottle {}: {sig}: waiting for the {backend} engine to finish before tearing down", p.slug);
            let _ = up.await;
            let _ = std::fs::remove_file(&archive);
            return Err(LaunchError::Interrupted(sig));
        }
    };
    // The engine keeps its own copy.
    let _ = std::fs::remove_file(&archive);
    up.map_err(|e| LaunchError::Unsupported(format!("a driver call did not finish: {e}")))??;
    let command = opts
        .command
        .clone()
        .unwrap_or_else(|| p.plan.stack.agent.command.clone());
    let plan = driver.exec_plan(
        &p.slug,
        &p.state_dir,
        &command,
        Some(&p.plan.stack.agent.workdir),
        attach::stdin_is_terminal(),
        Some(hop_token),
    )?;
    let mut child = tokio::process::Command::new(&plan.program)
        .args(&plan.args)
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LaunchError::Unsupported(format!("cannot run {}: {e}", plan.program)))?;
    let status = stop
        .or_stop(async {
            child
                .wait()
                .await
                .map_err(|e| LaunchError::Unsupported(format!("waiting for {}: {e}", plan.program)))
        })
        .await?;
    Ok((i64::from(status.code().unwrap_or(-1)), None))
}

/// What each of the agent's commands gets in its env on top of the container's: its proxy
/// URLs carrying the hop token (never in the container's own config).
pub fn agent_hop_env(p: &Prepared, hop: &str) -> Vec<String> {
    bottle_contract::hop::proxy_env(
        p.plan
            .stack
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        hop,
    )
    .into_iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

/// The user Docker runs the agent as: see [`crate::confine::Confinement::docker_user`].
async fn agent_user(docker: &Docker, p: &Prepared, image: &str) -> Result<String, DockerError> {
    let image_user = docker
        .inspect_image(image)
        .await
        .map_err(docker::api(format!("inspecting the agent image {image}")))?
        .config
        .and_then(|c| c.user);
    Ok(p.confinement
        .docker_user(crate::confine::invoker(), image_user.as_deref()))
}

/// Bring the bottle up and attach (or run the escape suite); the agent's exit code and the
/// suite's report.
async fn run_bottle(
    docker: &Docker,
    p: &Prepared,
    opts: &LaunchOptions,
    project_name: &str,
) -> Result<(i64, Option<verify::Report>), LaunchError> {
    let mut stop = Interrupt::new();
    let compose_path = p.state_dir.join(layout::COMPOSE_FILE);
    let file = project::read(&compose_path).map_err(DockerError::from)?;
    let agent = file
        .services
        .get(layout::AGENT_SERVICE)
        .ok_or_else(|| DockerError::Host("the compose file has no agent".into()))?;
    let user = agent_user(docker, p, &agent.image).await?;
    if !p.confinement.workdir_volume {
        // Before anything starts: an agent that cannot write the dir it shares would find out
        // only at its first write.
        crate::workdir::layer::check_writable(Path::new(&p.metadata.cwd), &user, &p.manifest.file)?;
    }
    opts.phases.done("agent's user decided");
    p.mint_keys()?;
    opts.phases.done("keys minted");
    // Any local process reaches the bundle's address on its egress bridge: its daemons serve
    // only what carries this, and only the agent is given it.
    let hop = mint_hop_token()?;
    p.fill_hop_token(Some(&hop))?;
    stop.or_stop(ensure_bundle_image(docker, &file, opts))
        .await?;
    opts.phases.done("bundle image checked");
    let stack = &p.plan.stack;
    let secrets = project::resolve_secrets(
        &file,
        &stack.bundle_secrets,
        &stack.agent.secret_env,
        host_value(&opts.env, &hop),
    )
    .map_err(DockerError::from)?;
    let state_dir = p.state_dir.display().to_string();
    let probe = match opts.verify {
        verify::Mode::Off => None,
        _ => Some(verify::install_probe(&p.state_dir)?.display().to_string()),
    };
    // `cwd: mount`: the agent works on a layer over your dir, brought back at teardown.
    let layer = if p.confinement.workdir_volume {
        None
    } else {
        Some(crate::workdir::layer::Layer::create(
            &p.state_dir,
            Path::new(&p.metadata.cwd),
        )?)
    };
    let req = up::UpRequest {
        project: project_name,
        slug: &p.slug,
        state_dir: &state_dir,
        secrets: &secrets,
        health_timeout: opts.health_timeout,
        agent: up::AgentRun {
            confinement: &p.confinement,
            user,
            probe,
            layer: layer.as_ref(),
        },
        bundle: p.manifest.bundle_resources,
        phases: &opts.phases,
        config: &opts.config,
    };
    stop.or_stop(up::up(docker, &file, &req)).await?;
    let agent_container = up::container_name(project_name, layout::AGENT_SERVICE, agent);
    if p.metadata.copy_cwd {
        stop.or_stop(copy_cwd(
            docker,
            &agent_container,
            Path::new(&p.metadata.cwd),
            &p.plan.stack.agent.workdir,
            crate::confine::Confinement::numeric_ids(&req.agent.user),
        ))
        .await?;
    }
    let report = match opts.verify {
        verify::Mode::Off => None,
        _ => Some(
            stop.or_stop(verify::run_suite(docker, &file, p, &agent_container, &hop))
                .await?,
        ),
    };
    match (&opts.verify, &report) {
        (verify::Mode::Only, _) => return Ok((0, report)),
        (verify::Mode::First, Some(r)) if !r.held() => return Ok((1, report)),
        (verify::Mode::First, Some(r)) => eprintln!(
            "bottle {}: verify: {} probes, nothing escaped; handing over the terminal",
            p.slug,
            r.findings.len()
        ),
        _ => {}
    }
    let exec = attach::ExecRequest {
        container: agent_container,
        command: opts
            .command
            .clone()
            .unwrap_or_else(|| p.plan.stack.agent.command.clone()),
        workdir: Some(p.plan.stack.agent.workdir.clone()),
        tty: attach::stdin_is_terminal(),
        env: agent_hop_env(p, &hop),
    };
    // Grants a human gives for a while end on time while the agent works.
    let _clock =
        crate::live::GrantClock::start(opts.env.clone(), p.state_dir.clone(), p.slug.clone());
    // A bundle that dies is said at once and started again; one that keeps dying ends the run.
    let watched = watch::Watched {
        docker,
        file: &file,
        project: project_name,
        state_dir: &p.state_dir,
        health_timeout: opts.health_timeout,
        env: &opts.env,
    };
    tokio::select! {
        r = attach::exec(docker, &exec) => Ok((r?, report)),
        lost = watch::watch(watched) => match lost {
            Err(e) => Err(LaunchError::BundleLost(e)),
            Ok(never) => match never {},
        },
        sig = &mut stop.0 => Err(LaunchError::Interrupted(sig)),
    }
}

/// `cwd: copy`: put a copy of the host's working dir at the agent's workdir.
///
/// The tar is streamed as it is packed (a few chunks in flight), so a large tree never sits in
/// memory whole.
async fn copy_cwd(
    docker: &Docker,
    container: &str,
    cwd: &Path,
    workdir: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), DockerError> {
    let cwd = cwd.to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let packer = tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx));
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let packed = append_tree(&mut b, &cwd, Path::new(""), owner)
            .and_then(|()| b.into_inner())
            .and_then(|w| w.into_inner().map(drop).map_err(|e| e.into_error()));
        if let Err(e) = &packed {
            // End the upload with an error rather than a tar cut short.
            let _ = errors.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        packed
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
        .path(workdir)
        .build();
    let uploaded = docker
        .upload_to_container(container, Some(opts), bollard::body_try_stream(body))
        .await;
    let packed = packer
        .await
        .map_err(|e| DockerError::Host(format!("copying the working dir: {e}")))?;
    // A packing error explains a failed upload better than the upload's own error.
    if let Err(e) = &packed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(DockerError::Host(format!(
            "cannot pack the working dir for copying: {e}"
        )));
    }
    uploaded.map_err(docker::api(format!(
        "copying the working dir into {container}:{workdir}"
    )))
}

/// Pack the tree under `root` (entries named from `rel`), links as links, every entry owned
/// by `owner` when given: the copy belongs to the agent's user, who has no right to chown.
fn append_tree<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        let path = root.join(&name);
        let meta = std::fs::symlink_metadata(&path)?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if let Some((uid, gid)) = owner {
            h.set_uid(uid.into());
            h.set_gid(gid.into());
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            b.append_data(&mut h, &name, std::io::empty())?;
            append_tree(b, root, &name, owner)?;
        } else if kind.is_file() {
            b.append_data(&mut h, &name, std::fs::File::open(&path)?)?;
        } else if kind.is_symlink() {
            b.append_link(&mut h, &name, std::fs::read_link(&path)?)?;
        }
        // Sockets, fifos and devices are not copied.
    }
    Ok(())
}

/// Hands what is written to an async receiver, blocking while it is full.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
