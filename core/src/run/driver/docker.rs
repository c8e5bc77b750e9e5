//! The in-process Docker driver: a bottle's compose file brought up through Docker's API
//! ([`crate::run::docker`]), the agent's command run attached, the bundle watched, everything of
//! the slug removed at teardown and the agent's work (`cwd: mount`) brought back.

use super::{BoxFuture, Driver, Launch, Part, Started, Teardown, Work};
use crate::plan::prepare::Prepared;
use crate::run::docker::{self, DockerError, attach, down, images, inventory, project, up, watch};
use crate::run::launch::{LaunchError, LaunchOptions, agent_hop_env, host_value, mint_hop_token};
use crate::run::verify;
use bollard::Docker;
use bottle_contract::layout;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Docker, driven in process.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
    /// The user's home, where brought-back work may write (`~/.gitconfig` stays theirs).
    home: Option<PathBuf>,
}

impl DockerDriver {
    /// Connect to the engine `DOCKER_HOST` names (or the default socket).
    pub async fn connect(env: &crate::hostenv::HostEnv) -> Result<DockerDriver, DockerError> {
        Ok(DockerDriver {
            docker: docker::connect().await?,
            home: env.home(),
        })
    }

    /// The engine's client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

impl Driver for DockerDriver {
    fn name(&self) -> &str {
        "docker"
    }

    fn probe<'a>(
        &'a self,
        slug: &'a str,
        _state_root: &'a Path,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move { Ok(orphan_probe(&self.docker, slug).await?) })
    }

    fn up<'a>(
        &'a self,
        launch: &'a Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Started<'a> + 'a>, LaunchError>> {
        Box::pin(async move {
            let started: Box<dyn Started<'a> + 'a> = Box::new(start(&self.docker, launch).await?);
            Ok(started)
        })
    }

    fn logs<'a>(
        &'a self,
        slug: &'a str,
        _state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<String, LaunchError>> {
        Box::pin(async move {
            let containers = inventory::containers(&self.docker, Some(slug)).await?;
            Ok(down::merged_logs(&self.docker, &containers).await)
        })
    }

    fn down<'a>(
        &'a self,
        slug: &'a str,
        t: Teardown<'a>,
    ) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            sweep(&self.docker, slug, t.log_file, t.after_interrupt).await?;
            match t.work {
                Work::Leave => Ok(()),
                Work::BringBack | Work::Discard => {
                    let discard = t.work == Work::Discard;
                    bring_back_work(&self.docker, t.state_dir, self.home.clone(), discard).await
                }
            }
        })
    }

    fn list<'a>(&'a self, _state_root: &'a Path) -> BoxFuture<'a, Result<Vec<Part>, LaunchError>> {
        Box::pin(async move {
            Ok(inventory::containers(&self.docker, None)
                .await?
                .into_iter()
                .map(|c| Part {
                    slug: c.slug,
                    name: c.name,
                    role: c.role,
                    state: c.state,
                    created: c.created,
                    agent: Some(c.agent),
                })
                .collect())
        })
    }
}

/// Fail if a container or project of this slug exists already.
pub async fn orphan_probe(docker: &Docker, slug: &str) -> Result<(), DockerError> {
    let bundle = layout::bundle_container(slug);
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
            what: format!("compose project {}", layout::project(slug)),
            slug: slug.to_owned(),
        });
    }
    Ok(())
}

/// Build the bundle image if a compose file needs it and it is missing or was built by
/// another version of bottle.
pub(crate) async fn ensure_bundle_image(
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

/// The `uid:gid` Docker runs the agent as: see
/// [`crate::run::confine::Confinement::docker_user`]. A user named by name (or a uid alone)
/// is looked up in the image's own `/etc/passwd` and `/etc/group`, so that what it may write,
/// who owns its home and whether it is root are judged by its numbers: `toor` with uid 0 is
/// root, and needs `--grant agent=root` as `root` does.
async fn agent_user(docker: &Docker, p: &Prepared, image: &str) -> Result<String, DockerError> {
    use crate::run::confine::{Confinement, FALLBACK_USER, UserChoice, resolve_user};
    let image_user = docker
        .inspect_image(image)
        .await
        .map_err(docker::api(format!("inspecting the agent image {image}")))?
        .config
        .and_then(|c| c.user);
    let spec = p
        .confinement
        .docker_user(crate::run::confine::invoker(), image_user.as_deref());
    if spec.contains(':') && Confinement::numeric_ids(&spec).is_some() {
        return Ok(spec);
    }
    let files = crate::run::docker::helper::image_files(
        docker,
        &p.slug,
        image,
        &["/etc/passwd", "/etc/group"],
    )
    .await?;
    let text = |i: usize| {
        files
            .get(i)
            .and_then(|f| f.as_deref())
            .map(String::from_utf8_lossy)
    };
    let (passwd, group) = (text(0), text(1));
    let m = p.manifest.file.display();
    let (uid, gid) = resolve_user(&spec, passwd.as_deref(), group.as_deref()).map_err(|why| {
        DockerError::Host(format!(
            "the agent's user `{spec}` in image {image}: {why}; set `user: \"UID:GID\"` in {m}"
        ))
    })?;
    if uid == 0 && !p.confinement.root_granted {
        return match &p.confinement.user {
            // The image's own user is root by another name: as for `root`, the agent does
            // not inherit it.
            UserChoice::Invoker => Ok(FALLBACK_USER.to_owned()),
            UserChoice::Named(_) => Err(DockerError::Host(format!(
                "{m}: `user: {spec}` is uid 0 (root) in image {image}, which can undo the agent's confinement; pick an unprivileged user, or pass `--grant agent=root` if you mean it"
            ))),
        };
    }
    Ok(format!("{uid}:{gid}"))
}

/// Bring `launch`'s bottle up (and run the escape suite when asked), ready to attach.
async fn start<'a>(
    docker: &'a Docker,
    launch: &'a Launch<'a>,
) -> Result<DockerStarted<'a>, LaunchError> {
    let (p, opts) = (launch.prepared, launch.options);
    let project_name = p.plan.deployment.project.as_str();
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
        crate::plan::workdir::layer::check_writable(
            Path::new(&p.metadata.cwd),
            &user,
            &p.manifest.file,
        )?;
    }
    opts.phases.done("agent's user decided");
    p.mint_keys()?;
    opts.phases.done("keys minted");
    // Any local process reaches the bundle's address on its egress bridge: its daemons serve
    // only what carries this, and only the agent is given it.
    let hop = mint_hop_token()?;
    p.fill_hop_token(Some(&hop))?;
    ensure_bundle_image(docker, &file, opts).await?;
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
    // The agent's command is its container's process, waiting for the go-ahead given once the
    // terminal is attached.
    let start_files = attach::StartFiles::install(&p.state_dir)?;
    let command = opts
        .command
        .clone()
        .unwrap_or_else(|| p.plan.stack.agent.command.clone());
    let tty = attach::stdin_is_terminal();
    // `cwd: mount`: the agent works on a layer over your dir, brought back at teardown.
    let layer = if p.confinement.workdir_volume {
        None
    } else {
        Some(crate::plan::workdir::layer::Layer::create(
            &p.state_dir,
            Path::new(&p.metadata.cwd),
        )?)
    };
    // The bundle's daemons take the agent's listeners when they are bottle's own: the agent
    // then joins no network at all (`up` decides whether the file lets it).
    let listeners: Option<Vec<bottle_contract::handoff::Listener>> =
        bottle_contract::handoff::listeners(&bottle_contract::daemons::daemon_list(&p.plan.stack))
            .map(|l| l.into_iter().map(|(_, l)| l).collect());
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
            start: Some(up::AgentStart {
                files: &start_files,
                command: &command,
                workdir: &p.plan.stack.agent.workdir,
                tty,
                listeners: listeners.as_deref(),
            }),
        },
        bundle: p.manifest.bundle_resources,
        phases: &opts.phases,
        config: &opts.config,
    };
    let file = up::up(docker, &file, &req).await?;
    let agent_container = up::container_name(project_name, layout::AGENT_SERVICE, agent);
    if p.metadata.copy_cwd {
        copy_cwd(
            docker,
            &agent_container,
            Path::new(&p.metadata.cwd),
            &p.plan.stack.agent.workdir,
            crate::run::confine::Confinement::numeric_ids(&req.agent.user),
        )
        .await?;
    }
    let env = agent_hop_env(p, &hop);
    let report = match opts.verify {
        verify::Mode::Off => None,
        _ => {
            let exec_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some(verify::run_suite(docker, &file, p, &agent_container, &exec_env).await?)
        }
    };
    let session = attach::AgentSession {
        container: agent_container,
        tty,
        go: start_files.go,
        env,
        timeout: opts.health_timeout,
    };
    Ok(DockerStarted {
        docker,
        launch,
        file,
        session,
        report,
    })
}

/// A bottle [`start`]ed on Docker.
struct DockerStarted<'a> {
    docker: &'a Docker,
    launch: &'a Launch<'a>,
    /// The compose file as brought up, its networks named as joined (the bundle is watched,
    /// and restarted, by it).
    file: project::ComposeFile,
    /// The agent's command, waiting for its go-ahead.
    session: attach::AgentSession,
    report: Option<verify::Report>,
}

impl<'a> Started<'a> for DockerStarted<'a> {
    fn report(&self) -> Option<verify::Report> {
        self.report.clone()
    }

    fn attach(self: Box<Self>) -> BoxFuture<'a, Result<i64, LaunchError>> {
        Box::pin(async move {
            let (p, opts) = (self.launch.prepared, self.launch.options);
            // Grants a human gives for a while end on time while the agent works.
            let _clock = crate::live::apply::GrantClock::start(
                opts.env.clone(),
                p.state_dir.clone(),
                p.slug.clone(),
            );
            // A bundle that dies is said at once and started again; one that keeps dying ends
            // the run.
            let watched = watch::Watched {
                docker: self.docker,
                file: &self.file,
                project: &p.plan.deployment.project,
                state_dir: &p.state_dir,
                health_timeout: opts.health_timeout,
                env: &opts.env,
            };
            // Once the agent's process ended, its way out is no longer needed: the bundle's
            // daemons write their last lines and exit while the engine still releases the
            // agent's container, instead of after it (teardown then finds the bundle stopped).
            // The engine says the death before the output's end; either ends the watch.
            let since = docker::unix_now();
            let relay = attach::run(self.docker, &self.session);
            tokio::pin!(relay);
            let relayed = tokio::select! {
                r = &mut relay => Some(r),
                () = attach::died(self.docker, &self.session.container, since) => None,
                lost = watch::watch(watched) => match lost {
                    Err(e) => return Err(LaunchError::BundleLost(e)),
                    Ok(never) => match never {},
                },
            };
            let bundle =
                self.file.services.get(layout::BUNDLE_SERVICE).map(|s| {
                    up::container_name(&p.plan.deployment.project, layout::BUNDLE_SERVICE, s)
                });
            let stop_bundle = async {
                if let Some(name) = &bundle {
                    down::stop_gracefully(self.docker, name).await;
                }
            };
            // What the agent wrote last is still relayed; then its exit code is read.
            let ended = async {
                let end = match relayed {
                    Some(r) => r?,
                    None => relay.await?,
                };
                attach::exit_code(self.docker, &self.session.container, end).await
            };
            let (code, ()) = tokio::join!(ended, stop_bundle);
            Ok(code?)
        })
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

/// Bring the agent's work in the layer of the bottle in `state_dir` (`cwd: mount`) back into
/// your dir and say what came back; then remove the layer. The bottle's agent must be gone.
/// `discard` (the escape suite's own run) brings nothing back. A layer that could not be read
/// stays, with the state dir, and the error says where.
async fn bring_back_work(
    docker: &Docker,
    state_dir: &Path,
    home: Option<PathBuf>,
    discard: bool,
) -> Result<(), LaunchError> {
    use crate::plan::workdir::{self, layer::Layer};
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
        let came = crate::run::launch::blocking(move || workdir::bring_back(&l, &s, &to, home.as_deref()))
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
    layer: &crate::plan::workdir::layer::Layer,
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

/// Tear bottle `slug` down, its logs to `log_file`. After an interrupt, sweep once more: a
/// Docker call the interrupt cut short (a container being created) may still land after the
/// first sweep listed what exists, since the daemon finishes it though its client went away.
pub(crate) async fn sweep(
    docker: &Docker,
    slug: &str,
    log_file: Option<&Path>,
    interrupted: bool,
) -> Result<(), DockerError> {
    let mut result = down::down(docker, slug, log_file).await;
    if interrupted {
        tokio::time::sleep(Duration::from_millis(500)).await;
        result = result.and(down::down(docker, slug, None).await);
    }
    // Only once no container of it can still land on them.
    docker::kept::release(docker, slug).await;
    result
}
