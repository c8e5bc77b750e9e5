//! A native driver behind the [`Driver`] contract: the agent runs on the driver's engine (a
//! microVM), the sidecar bundle the backend rendered beside it (`bundle.compose.yaml`) on
//! Docker ([`DockerDriver`]), reached at its container's own address.

use super::docker::{DockerDriver, ensure_bundle_image, orphan_probe, sweep};
use super::native::NativeDriver;
use super::{BUNDLE_COMPOSE_FILE, BoxFuture, Driver, Launch, Part, Started, Teardown};
use crate::run::docker::{DockerError, attach, images, project, up};
use crate::run::launch::{LaunchError, blocking, host_value, mint_hop_token};
use crate::run::verify;
use std::path::Path;
use std::sync::Arc;

/// A native driver for the agent, Docker for its bundle.
pub struct NativeAdapter {
    bundle: DockerDriver,
    agent: Arc<NativeDriver>,
    /// Held by every engine call: one the launch gave up on (a signal) cannot be cut short,
    /// so teardown waits for it and then finds what it made.
    engine: Arc<tokio::sync::Mutex<()>>,
}

impl NativeAdapter {
    /// `agent` for the agent, `bundle` for the bundle.
    pub fn new(bundle: DockerDriver, agent: Arc<NativeDriver>) -> NativeAdapter {
        NativeAdapter {
            bundle,
            agent,
            engine: Arc::default(),
        }
    }

    /// Run blocking engine call `f` off the async threads, holding the engine.
    async fn engine_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&NativeDriver) -> T + Send + 'static,
    ) -> Result<T, LaunchError> {
        let held = self.engine.clone().lock_owned().await;
        let agent = self.agent.clone();
        blocking(move || {
            let _held = held;
            f(&agent)
        })
        .await
    }
}

/// Why a natively driven `backend` cannot give the agent the working dir as `cwd` says, if it
/// cannot: only `cwd: none` runs there for now.
pub fn natively_unsupported(cwd: crate::plan::manifest::CwdMode, backend: &str) -> Option<String> {
    use crate::plan::manifest::CwdMode;
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

impl Driver for NativeAdapter {
    fn name(&self) -> &str {
        self.agent.name()
    }

    fn probe<'a>(
        &'a self,
        slug: &'a str,
        state_root: &'a Path,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            orphan_probe(self.bundle.client(), slug).await?;
            let root = state_root.to_owned();
            let listed = self.engine_call(move |d| d.list(&root)).await??;
            if listed.iter().any(|l| l.slug == slug) {
                return Err(DockerError::Orphan {
                    what: format!("{} machine bottle-{slug}", self.agent.name()),
                    slug: slug.to_owned(),
                }
                .into());
            }
            Ok(())
        })
    }

    fn up<'a>(
        &'a self,
        launch: &'a Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Started<'a> + 'a>, LaunchError>> {
        Box::pin(async move {
            let started: Box<dyn Started<'a> + 'a> = Box::new(self.start(launch).await?);
            Ok(started)
        })
    }

    fn logs<'a>(
        &'a self,
        slug: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<String, LaunchError>> {
        Box::pin(async move {
            let mut logs = self.bundle.logs(slug, state_dir).await?;
            let (s, state) = (slug.to_owned(), state_dir.to_owned());
            let agent = self.engine_call(move |d| d.logs(&s, &state)).await??;
            // The agent's own output: made safe to print, as every part's lines are.
            logs.extend(
                agent
                    .lines()
                    .map(|l| format!("agent-vm | {}\n", bottle_contract::terminal::safe(l))),
            );
            Ok(logs)
        })
    }

    fn down<'a>(
        &'a self,
        slug: &'a str,
        t: Teardown<'a>,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            if self.engine.try_lock().is_err() {
                eprintln!(
                    "bottle {slug}: waiting for the {} engine to finish before tearing down",
                    self.agent.name()
                );
            }
            let bundle = sweep(self.bundle.client(), slug, t.log_file, t.after_interrupt).await;
            // After the bundle's logs are written: the agent's output is appended to them.
            let (s, state) = (slug.to_owned(), t.state_dir.to_owned());
            let agent = self.engine_call(move |d| d.down(&s, &state)).await;
            bundle?;
            agent??;
            Ok(())
        })
    }

    fn list<'a>(&'a self, state_root: &'a Path) -> BoxFuture<'a, Result<Vec<Part>, LaunchError>> {
        Box::pin(async move {
            let root = state_root.to_owned();
            let role = format!("{}-vm", self.agent.name());
            Ok(self
                .engine_call(move |d| d.list(&root))
                .await??
                .into_iter()
                .map(|m| Part {
                    slug: m.slug,
                    name: m.name,
                    role: role.clone(),
                    state: m.state,
                    created: m.created,
                    agent: None,
                })
                .collect())
        })
    }
}

/// A natively driven bottle brought up: the program that runs the agent's command.
struct NativeStarted {
    plan: bottle_driver_sdk::ExecPlan,
}

impl<'a> Started<'a> for NativeStarted {
    fn report(&self) -> Option<verify::Report> {
        None
    }

    fn attach(self: Box<Self>) -> BoxFuture<'a, Result<i64, LaunchError>> {
        Box::pin(async move {
            let plan = self.plan;
            let mut child = tokio::process::Command::new(&plan.program)
                .args(&plan.args)
                .envs(plan.env.iter().map(|(k, v)| (k, v)))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    LaunchError::Unsupported(format!("cannot run {}: {e}", plan.program))
                })?;
            let status = child.wait().await.map_err(|e| {
                LaunchError::Unsupported(format!("waiting for {}: {e}", plan.program))
            })?;
            Ok(i64::from(status.code().unwrap_or(-1)))
        })
    }
}

impl NativeAdapter {
    /// Bring up a natively driven bottle: the bundle on Docker from the backend's
    /// [`BUNDLE_COMPOSE_FILE`], the agent through the driver from the agent image saved by
    /// Docker.
    async fn start(&self, launch: &Launch<'_>) -> Result<NativeStarted, LaunchError> {
        let (p, opts) = (launch.prepared, launch.options);
        let docker = self.bundle.client();
        let backend = &p.plan.backend;
        if opts.verify != verify::Mode::Off {
            return Err(LaunchError::Unsupported(format!(
                "the escape suite runs on the docker backend only for now; run `bottle verify` without --backend {backend}"
            )));
        }
        if let Some(why) = natively_unsupported(p.manifest.cwd, backend) {
            return Err(LaunchError::Unsupported(why));
        }
        p.mint_keys()?;
        // Any local process reaches the bundle's address: only the agent's side holds this.
        // The driver fills its own copies of the agent's files.
        let hop_token = mint_hop_token()?;
        let bundle_path = p.state_dir.join(BUNDLE_COMPOSE_FILE);
        // Where the agent reaches the bundle: its container's own address (nothing is
        // published).
        let mut bundle_address = None;
        if bundle_path.exists() {
            let file = project::read(&bundle_path).map_err(DockerError::from)?;
            ensure_bundle_image(docker, &file, opts).await?;
            let secrets = project::resolve_secrets(
                &file,
                &p.plan.stack.bundle_secrets,
                &[],
                host_value(&opts.env, &hop_token),
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
                    start: None,
                },
                bundle: p.manifest.bundle_resources,
                phases: &opts.phases,
                config: &opts.config,
            };
            let file = up::up(docker, &file, &req).await?;
            for (key, s) in &file.services {
                if let Some(h) = &s.healthcheck {
                    let name = up::container_name(&p.plan.deployment.project, key, s);
                    up::wait_healthy(docker, &name, &h.test, opts.health_timeout).await?;
                }
            }
            bundle_address =
                Some(bundle_address_of(docker, &file, &p.plan.deployment.project).await?);
        }
        // The agent's image, as an archive the engine reads (no registry here or there).
        let archive = p.state_dir.join("agent-image.tar");
        images::save(docker, &p.plan.stack.agent.image, &archive).await?;
        let (slug, state, token) = (p.slug.clone(), p.state_dir.clone(), hop_token.clone());
        // The engine keeps its own copy of the image; the call runs to its end even when the
        // launch gives up on it, and teardown waits for it ([`NativeAdapter::engine`]).
        self.engine_call(move |d| {
            let up = d.up(&slug, &state, Some(&archive), Some(&token), bundle_address);
            let _ = std::fs::remove_file(&archive);
            up
        })
        .await??;
        let command = opts
            .command
            .clone()
            .unwrap_or_else(|| p.plan.stack.agent.command.clone());
        let plan = self.agent.exec_plan(
            &p.slug,
            &p.state_dir,
            &command,
            Some(&p.plan.stack.agent.workdir),
            attach::stdin_is_terminal(),
            Some(&hop_token),
        )?;
        Ok(NativeStarted { plan })
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
    let (key, service) = file
        .services
        .iter()
        .next()
        .ok_or_else(|| unsupported(format!("{BUNDLE_COMPOSE_FILE} has no service")))?;
    let network = service
        .networks
        .keys()
        .next()
        .and_then(|k| file.networks.get(k))
        .ok_or_else(|| {
            unsupported(format!(
                "{BUNDLE_COMPOSE_FILE}: service `{key}` is on no network of the file, so the agent could not reach it"
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
