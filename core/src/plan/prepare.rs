//! From `bottle run AGENT` to a written state dir: the steps every launch shares.
//!
//! [`prepare`] reads the manifest, mints a slug, runs every plugin and writes the state dir.
//! `--dry-run` stops there; a real launch (next: keys, bring-up, attach) starts from the
//! returned [`Prepared`].

use crate::model::{Mount, MountSource};
use crate::plan::manifest::{CwdMode, Manifest, ManifestError};
use crate::plan::planner::{self, BottlePlan, PlanError, PlanRequest};
use crate::plan::policy::Grants;
use crate::plugin::PluginSet;
use crate::run::confine::Confinement;
use crate::state::{self, Metadata, StateError};
use std::path::PathBuf;

/// What the user asked for, already typed.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The manifest, parsed.
    pub manifest: Manifest,
    /// Backend override (`--backend`).
    pub backend: Option<String>,
    /// Extra grants (`--grant`).
    pub grants: Grants,
    /// The host dir the agent works on.
    pub cwd: PathBuf,
    /// Where state dirs live.
    pub state_root: PathBuf,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// Reuse this slug instead of minting one (`--slug`).
    pub slug: Option<String>,
    /// Whether the bundle carries pipelock (see [`crate::run::driver::docker::pipelock_in_bundle`]);
    /// without it the pipelock plugin is left out and egress dials out itself.
    pub pipelock: bool,
    /// How that was decided, when not from a built bundle image.
    pub pipelock_note: Option<String>,
    /// The host's Docker socket when `DOCKER_HOST` names one (no plugin mounts it ungranted).
    pub docker_socket: Option<String>,
    /// Host dirs `cwd: mount` may never hand the agent (see [`crate::plan::workdir`]).
    pub protected: Vec<crate::plan::workdir::Protected>,
    /// `--plugin-dir`s, recorded so a live approval loads the same plugins.
    pub plugin_dirs: Vec<PathBuf>,
    /// Accesses approved earlier (`bottle approve --persist`), already laid over `manifest`;
    /// they start this run's approvals.
    pub approved: crate::live::granted::Approved,
}

/// A prepared bottle: plan computed, state dir written.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The manifest.
    pub manifest: Manifest,
    /// The slug.
    pub slug: String,
    /// The state dir.
    pub state_dir: PathBuf,
    /// The plan.
    pub plan: BottlePlan,
    /// The metadata written.
    pub metadata: Metadata,
    /// How pipelock's presence was decided, when not from a built bundle image.
    pub pipelock_note: Option<String>,
    /// What the host imposes on the agent container.
    pub confinement: Confinement,
    /// Marks the state dir in use while this process runs (see [`state::in_use`]).
    pub lock: std::sync::Arc<state::StateLock>,
}

/// `path`'s permission bits (0600 when it cannot be read).
fn file_mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777)
}

/// The sidecar left out when the bundle has no pipelock binary.
pub const PIPELOCK_PLUGIN: &str = "pipelock";

impl Prepared {
    /// Mint the CAs every sidecar asked for into the state dir (a real run; a dry run mints
    /// none).
    pub fn mint_keys(&self) -> Result<(), crate::run::keys::KeyError> {
        let requests: Vec<_> = self
            .plan
            .sidecars
            .iter()
            .flat_map(|s| s.plan.cas.iter().cloned())
            .collect();
        crate::run::keys::mint_all(&self.state_dir, &requests, &self.plan.cas)
    }

    /// Put `token` in place of the hop token's placeholder in the files this bottle's agent
    /// is given (its gitconfig's git-gate URLs, its MCP config's bearer): in the state dir,
    /// which only you can read, and mounted into the agent alone. With no token (a backend
    /// whose hop the network fences) the placeholder's path segment goes, and an empty value
    /// stays elsewhere.
    pub fn fill_hop_token(&self, token: Option<&str>) -> Result<(), crate::state::StateError> {
        use bottle_contract::hop::PLACEHOLDER;
        let mut files: Vec<&str> = self
            .plan
            .stack
            .agent
            .mounts
            .iter()
            .filter_map(|m| match &m.source {
                MountSource::State(p) => Some(p.as_str()),
                _ => None,
            })
            .collect();
        files.push(bottle_contract::layout::MCP_CONFIG_STATE_PATH);
        for rel in files {
            let path = self.state_dir.join(rel);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // a dir, or a file this bottle does not have
            };
            if !text.contains(PLACEHOLDER) {
                continue;
            }
            let filled = match token {
                Some(t) => text.replace(PLACEHOLDER, t),
                None => text
                    .replace(&format!("{PLACEHOLDER}/"), "")
                    .replace(PLACEHOLDER, ""),
            };
            crate::live::apply::write_whole(&path, filled.as_bytes(), file_mode(&path))
                .map_err(|error| crate::state::StateError::Io { path, error })?;
        }
        Ok(())
    }

    /// Which firewall this bottle has, in words (the plan summary and the start line).
    pub fn firewall(&self) -> String {
        let has = |n: &str| self.plan.sidecars.iter().any(|s| s.plugin == n);
        let mut s = match (has("egress"), has(PIPELOCK_PLUGIN)) {
            (true, true) => "egress, chained to pipelock (both layers apply)".to_owned(),
            (true, false) => {
                "egress alone (no pipelock in the bundle): allowlist, SSRF guard and DLP".to_owned()
            }
            (false, true) => "pipelock alone".to_owned(),
            (false, false) => "none: the agent has no way out".to_owned(),
        };
        if let Some(note) = &self.pipelock_note {
            s.push_str(&format!(" [{note}]"));
        }
        s
    }
}

/// Why a launch could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The manifest is wrong.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A plugin or the merge failed.
    #[error("{file}: {error}")]
    Plan {
        /// The manifest file, for context.
        file: String,
        /// The error.
        error: PlanError,
    },
    /// The backend's deployment holds what the checked plan does not.
    #[error("{file}: {error}")]
    Admission {
        /// The manifest file, for context.
        file: String,
        /// What was refused.
        error: crate::run::docker::admit::Refused,
    },
    /// The state dir could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A `--plugin-dir` plugin replaces a built-in without a grant pinned to its hash.
    #[error(
        "{file}: plugin `{name}` from {by} replaces the built-in one; if you trust that file, pass `--grant {name}=replace:sha256:{hash}` (or add it under `plugins.{name}.grants`); the grant holds for that exact file only"
    )]
    UnpinnedOverride {
        /// The manifest.
        file: String,
        /// The plugin name.
        name: String,
        /// The file.
        by: String,
        /// Its content hash.
        hash: String,
    },
    /// `user:` names root without `--grant agent=root`.
    #[error(
        "{file}: `user: {user}` runs the agent as root, which can undo its confinement; pick an unprivileged user, or pass `--grant agent=root` if you mean it"
    )]
    RootAgent {
        /// The manifest.
        file: String,
        /// What `user:` says.
        user: String,
    },
    /// `cwd: mount` from a dir the agent may not get read-write.
    #[error(
        "{file}: cwd: mount would give the agent {cwd} read-write, which {why}; run bottle from a project dir (or pass --cwd DIR), or set `cwd: copy` (the agent gets a copy) or `cwd: none`"
    )]
    UnsafeCwd {
        /// The manifest.
        file: String,
        /// The dir.
        cwd: String,
        /// Why it is refused.
        why: String,
    },
}

/// Plan `req` with `plugins` and write the state dir.
pub fn prepare(plugins: &PluginSet, req: &RunRequest) -> Result<Prepared, PrepareError> {
    let manifest = req.manifest.clone();
    let slug = req
        .slug
        .clone()
        .unwrap_or_else(|| state::mint_slug(&manifest.name));
    let state_dir = req.state_root.join(&slug);
    let mut grants = manifest.grants.clone();
    grants.extend(&req.grants);
    check_overrides(plugins, req, &grants)?;
    if manifest.cwd == CwdMode::Mount
        && let Some(why) = crate::plan::workdir::refusal(&req.cwd, &req.protected)
    {
        return Err(PrepareError::UnsafeCwd {
            file: req.manifest.file.display().to_string(),
            cwd: req.cwd.display().to_string(),
            why,
        });
    }
    if let crate::run::confine::UserChoice::Named(user) = &manifest.user
        && manifest.user.is_root()
        && !grants.agent_root()
    {
        return Err(PrepareError::RootAgent {
            file: req.manifest.file.display().to_string(),
            user: user.clone(),
        });
    }
    let confinement = Confinement {
        user: manifest.user.clone(),
        root_granted: grants.agent_root(),
        home: manifest
            .agent
            .env
            .get("HOME")
            .cloned()
            .unwrap_or_else(|| crate::run::confine::DEFAULT_HOME.to_owned()),
        resources: manifest.resources,
        workdir_volume: manifest.cwd != CwdMode::Mount,
    };
    let plan = plan_bottle(plugins, req, &grants, &slug, &state_dir)?;
    let metadata = Metadata {
        agent: manifest.name.clone(),
        manifest: req.manifest.file.display().to_string(),
        cwd: req.cwd.display().to_string(),
        copy_cwd: manifest.cwd == CwdMode::Copy,
        started_at: state::rfc3339(std::time::SystemTime::now()),
        backend: plan.backend.clone(),
        compose_project: plan.deployment.project.clone(),
        plugins: plan.plugins.clone(),
        dry_run: req.dry_run,
    };
    let record = crate::live::apply::RunRecord::of(req);
    let mut records = vec![(
        crate::live::apply::RUN_FILE,
        state::pretty_json(&record).into_bytes(),
    )];
    if !req.approved.access.is_empty() {
        let text = serde_yaml::to_string(&req.approved).unwrap_or_default();
        records.push((crate::live::granted::APPROVED_FILE, text.into_bytes()));
    }
    let (state_dir, lock) = state::write(&req.state_root, &slug, &plan, &metadata, &records)?;
    Ok(Prepared {
        manifest,
        slug,
        state_dir,
        plan,
        metadata,
        pipelock_note: req.pipelock_note.clone(),
        confinement,
        lock: std::sync::Arc::new(lock),
    })
}

/// A plugin from a `--plugin-dir` replaces a built-in only with a grant pinned to its hash.
fn check_overrides(
    plugins: &PluginSet,
    req: &RunRequest,
    grants: &Grants,
) -> Result<(), PrepareError> {
    for o in plugins.overrides() {
        let Some(plugin) = plugins.get(&o.name) else {
            continue;
        };
        if !grants.replace(&o.name, plugin.content_hash()) {
            return Err(PrepareError::UnpinnedOverride {
                file: req.manifest.file.display().to_string(),
                name: o.name.clone(),
                by: o.by.to_string(),
                hash: plugin.content_hash().to_owned(),
            });
        }
    }
    Ok(())
}

/// Every plugin run for `req`'s bottle `slug`, the result admitted: what a run and a live
/// re-plan share.
fn plan_bottle(
    plugins: &PluginSet,
    req: &RunRequest,
    grants: &Grants,
    slug: &str,
    state_dir: &std::path::Path,
) -> Result<BottlePlan, PrepareError> {
    let manifest = &req.manifest;
    let agent_mounts = match manifest.cwd {
        CwdMode::Mount => cwd_mounts(&req.cwd, &manifest.agent.workdir),
        CwdMode::Copy | CwdMode::None => vec![],
    };
    let bottle = manifest.bottle(slug);
    let backend = req
        .backend
        .clone()
        .unwrap_or_else(|| manifest.backend.clone());
    let state_dir_str = state_dir.display().to_string();
    let left_out = if req.pipelock {
        vec![]
    } else {
        vec![PIPELOCK_PLUGIN.to_owned()]
    };
    let plan = planner::plan(
        plugins,
        &PlanRequest {
            bottle: &bottle,
            settings: &manifest.settings,
            grants,
            declared: &manifest.declared(),
            state_dir: &state_dir_str,
            backend: &backend,
            agent_mounts: &agent_mounts,
            left_out: &left_out,
            docker_socket: req.docker_socket.as_deref(),
        },
    )
    .map_err(|error| PrepareError::Plan {
        file: req.manifest.file.display().to_string(),
        error,
    })?;
    crate::run::docker::admit::admit(&plan).map_err(|error| PrepareError::Admission {
        file: req.manifest.file.display().to_string(),
        error,
    })?;
    Ok(plan)
}

/// Plan `req`'s bottle again, as it runs in `state_dir`: a live approval's new plan, which
/// [`crate::live::apply`] compares with the running one.
pub fn replan(
    plugins: &PluginSet,
    req: &RunRequest,
    state_dir: &std::path::Path,
) -> Result<BottlePlan, PrepareError> {
    let slug = state_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut grants = req.manifest.grants.clone();
    grants.extend(&req.grants);
    check_overrides(plugins, req, &grants)?;
    plan_bottle(plugins, req, &grants, &slug, state_dir)
}

/// `cwd: mount`: the working dir, read-write as the agent sees it. The host never hands the
/// agent your dir itself: on Docker it mounts the agent's layer over it ([`crate::plan::workdir`]),
/// so what the agent writes reaches your dir only at teardown, checked.
fn cwd_mounts(cwd: &std::path::Path, workdir: &str) -> Vec<Mount> {
    vec![Mount {
        source: MountSource::Host(cwd.display().to_string()),
        target: workdir.to_owned(),
        read_only: false,
    }]
}

/// `N hosts allowed (a, b, c +M more)`: every host the agent may reach, the manifest's own
/// first, the defaults last.
pub fn hosts_summary(manifest: &Manifest) -> String {
    let hosts = manifest.allowed_hosts();
    let shown: Vec<&str> = hosts.iter().take(3).map(String::as_str).collect();
    let more = hosts.len().saturating_sub(3);
    let mut s = format!("{} hosts allowed", hosts.len());
    if !shown.is_empty() {
        s.push_str(&format!(" ({}", shown.join(", ")));
        if more > 0 {
            s.push_str(&format!(" +{more} more"));
        }
        s.push(')');
    }
    s
}

/// The short human summary `bottle run --dry-run` prints.
pub fn summary(p: &Prepared) -> String {
    let m = &p.manifest;
    let mut env: Vec<String> = p.plan.stack.agent.env.keys().cloned().collect();
    env.extend(m.agent.secret_env.iter().map(|s| format!("{s} (secret)")));
    let git: Vec<String> = m
        .git
        .iter()
        .map(|g| {
            let policy = m
                .git_push
                .get(&g.name)
                .map_or_else(String::new, |p| format!(" ({})", p.describe()));
            format!("{} <- {}{policy}", g.name, g.url)
        })
        .collect();
    let sidecars: Vec<&str> = p.plan.sidecars.iter().map(|s| s.plugin.as_str()).collect();
    let keys: Vec<String> = p.plan.cas.iter().map(|c| c.key.clone()).collect();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<9} {v}\n"));
    line("agent:", m.name.clone());
    line("image:", m.agent.image.clone());
    line(
        "backend:",
        format!("{} ({})", p.plan.backend, p.plan.deployment.project),
    );
    line(
        "env:",
        if env.is_empty() {
            "none".into()
        } else {
            env.join(", ")
        },
    );
    line(
        "git:",
        if git.is_empty() {
            "none".into()
        } else {
            git.join("; ")
        },
    );
    line("egress:", hosts_summary(m));
    line("firewall:", p.firewall());
    line("confined:", p.confinement.to_string());
    line("sidecars:", sidecars.join(", "));
    if !keys.is_empty() {
        line(
            "keys:",
            format!("{} (minted at launch, not in a dry run)", keys.join(", ")),
        );
    }
    line("state:", p.state_dir.display().to_string());
    format!(
        "bottle {}{}\n{out}",
        p.slug,
        if p.metadata.dry_run {
            " (dry run: nothing started)"
        } else {
            ""
        }
    )
}

/// The default state root, or an error saying how to set one.
pub fn default_state_root(env: &crate::hostenv::HostEnv) -> Result<PathBuf, String> {
    env.state_dir()
        .ok_or_else(|| "cannot find a state dir: set HOME or BOTTLE_STATE_DIR".to_owned())
}
