//! Running every plugin for one bottle: prepare, resolve, render, check, merge, back-end render.
//!
//! The result, [`BottlePlan`], is everything a launch needs and everything `--dry-run` shows.
//! It holds no secret values: secrets appear only as env names.

use crate::model::*;
pub use crate::model::{BottlePlan, PluginRecord, SidecarPlan};
use crate::plan::merge::{self, MergeError, MergeInput};
use crate::plan::policy::{self, Declared, Grants, PolicyError, StateGuard};
use crate::plugin::{CallError, LoadedPlugin, PluginSet};
use crate::state;
use std::collections::BTreeMap;

/// Settings tables by plugin name (JSON values).
pub type Settings = BTreeMap<String, serde_json::Value>;

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// The validated manifest.
    pub bottle: &'a Bottle,
    /// Per-plugin settings tables.
    pub settings: &'a Settings,
    /// Capability grants.
    pub grants: &'a Grants,
    /// Host paths and env names the manifest declares.
    pub declared: &'a Declared,
    /// Absolute state dir of this bottle.
    pub state_dir: &'a str,
    /// Backend plugin name.
    pub backend: &'a str,
    /// Mounts the manifest gives the agent.
    pub agent_mounts: &'a [Mount],
    /// Sidecars the host leaves out of this bottle because they cannot run here (pipelock,
    /// when the bundle image has none): they are not even prepared.
    pub left_out: &'a [String],
    /// The host's Docker socket when `DOCKER_HOST` names one: mounting it (or a dir above it)
    /// needs the `docker-socket` grant like the standard sockets.
    pub docker_socket: Option<&'a str>,
}

/// The record of `p` for `metadata.json` and the plan.
fn record_of(p: &LoadedPlugin) -> PluginRecord {
    PluginRecord {
        name: p.name().to_owned(),
        kind: p.info().kind,
        version: p.info().version.clone(),
        api: p.api_version().to_string(),
        source: p.source().to_string(),
        content_hash: p.content_hash().to_owned(),
    }
}

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A hook failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Fragments conflict.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// A capability was refused, or a request was forbidden outright.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The backend is not loaded.
    #[error("no backend plugin named `{name}`; available: {available}")]
    NoBackend {
        /// The name asked for.
        name: String,
        /// Loaded backends.
        available: String,
    },
    /// Settings for a plugin that is not loaded.
    #[error(
        "settings for `{name}`, but no plugin has that name (loaded: {loaded}); fix the name under `plugins:` or add its --plugin-dir"
    )]
    UnknownPlugin {
        /// The name.
        name: String,
        /// Loaded plugin names.
        loaded: String,
    },
    /// A plugin's plan or deployment breaks a rule.
    #[error("plugin `{plugin}`: {detail}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        detail: String,
    },
    /// Two plugins stage one file or mint one CA.
    #[error(transparent)]
    Conflict(MergeError),
}

fn settings_json(settings: &Settings, name: &str) -> String {
    settings
        .get(name)
        .map_or_else(|| "{}".to_owned(), |v| v.to_string())
}

fn check_file(plugin: &str, path: &str, mode: u32) -> Result<(), PlanError> {
    if !safe_relative(path) {
        return Err(PlanError::Invalid {
            plugin: plugin.to_owned(),
            detail: format!(
                "file path {path:?} must be relative, inside the state dir, without `.` or `..`"
            ),
        });
    }
    let top = path.split('/').next().unwrap_or_default();
    if state::HOST_FILES.contains(&top) || top == state::CA_DIR {
        return Err(PlanError::Invalid {
            plugin: plugin.to_owned(),
            detail: format!(
                "file path {path:?} is bottle's own (it writes {} and {}/ itself); stage the file under a folder named after the plugin",
                state::HOST_FILES.join(", "),
                state::CA_DIR
            ),
        });
    }
    if mode > 0o777 {
        return Err(PlanError::Invalid {
            plugin: plugin.to_owned(),
            detail: format!("file {path}: mode {mode:o} is not a permission mode"),
        });
    }
    Ok(())
}

fn conflict(what: String, first: &str, second: &str) -> PlanError {
    PlanError::Conflict(MergeError::Conflict {
        what,
        first: merge::Owner::Plugin(first.to_owned()),
        second: merge::Owner::Plugin(second.to_owned()),
    })
}

pub use bottle_contract::names::{safe_relative, secret_env_prefix};

/// A secret env name of `plugin` must carry its prefix and no other active plugin's (`git`'s
/// `GIT_` would also claim `git-gate`'s `GIT_GATE_TOKEN`): so exactly one plugin's daemons see it.
fn check_secret_name<'a>(
    plugin: &str,
    secret: &str,
    active: impl Iterator<Item = &'a str>,
) -> Result<(), PlanError> {
    let invalid = |detail: String| PlanError::Invalid {
        plugin: plugin.to_owned(),
        detail,
    };
    let prefix = secret_env_prefix(plugin);
    if !secret.starts_with(&prefix) || !bottle_contract::names::valid_env_name(secret) {
        return Err(invalid(format!(
            "secret env `{secret}` must be an env name starting with `{prefix}`: a plugin's secrets carry its name, so only its own daemons see them"
        )));
    }
    if let Some(other) = active
        .filter(|other| *other != plugin)
        .find(|other| secret.starts_with(&secret_env_prefix(other)))
    {
        return Err(invalid(format!(
            "secret env `{secret}` also carries plugin `{other}`'s prefix `{}`, so its daemons would see it too; rename one of the two plugins",
            secret_env_prefix(other)
        )));
    }
    Ok(())
}

/// Where the host puts CA `id`'s files.
pub fn ca_paths(req: &CaRequest) -> CaPaths {
    let (cert, key, combined) = bottle_contract::layout::ca_files(&req.id);
    CaPaths {
        id: req.id.clone(),
        cert,
        key,
        combined: req.combined_pem.then_some(combined),
    }
}

/// Run every plugin in `plugins` for `req`.
pub fn plan(plugins: &PluginSet, req: &PlanRequest<'_>) -> Result<BottlePlan, PlanError> {
    let backend = select_backend(plugins, req)?;
    let active = prepare_all(plugins, req)?;
    let resolved = resolve(&active)?;
    let fragments = render_and_check(plugins, req, &active, &resolved)?;
    let stack = merge::merge(
        &MergeInput {
            slug: &req.bottle.slug,
            state_dir: req.state_dir,
            agent: &req.bottle.agent,
            agent_mounts: req.agent_mounts,
            agent_proxy: resolved
                .endpoints
                .iter()
                .find(|(_, e)| e.name == "agent-proxy")
                .map(|(plugin, e)| (plugin.as_str(), e)),
            agent_trusts_cas: resolved.agent_trusts_cas,
            secrets: &resolved.secrets,
        },
        &fragments,
    )?;
    let deployment = render_backend(backend, req, &stack, &resolved)?;

    let mut records: Vec<PluginRecord> = active.iter().map(|(p, _)| record_of(p)).collect();
    records.push(record_of(backend));
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(BottlePlan {
        plugins: records,
        sidecars: active
            .into_iter()
            .map(|(p, plan)| SidecarPlan {
                plugin: p.name().to_owned(),
                plan,
            })
            .collect(),
        cas: resolved.cas,
        endpoints: resolved.endpoints.into_iter().map(|(_, e)| e).collect(),
        stack,
        backend: backend.name().to_owned(),
        deployment,
    })
}

/// Settings only for loaded plugins, and the backend asked for.
fn select_backend<'p>(
    plugins: &'p PluginSet,
    req: &PlanRequest<'_>,
) -> Result<&'p LoadedPlugin, PlanError> {
    if let Some(name) = req.settings.keys().find(|n| plugins.get(n).is_none()) {
        return Err(PlanError::UnknownPlugin {
            name: name.clone(),
            loaded: plugins
                .all()
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    plugins
        .get(req.backend)
        .filter(|p| p.info().kind == PluginKind::Backend)
        .ok_or_else(|| PlanError::NoBackend {
            name: req.backend.to_owned(),
            available: plugins.backend_names().join(", "),
        })
}

/// Phase 1: every sidecar's `prepare`; the active ones with their plans.
fn prepare_all<'p>(
    plugins: &'p PluginSet,
    req: &PlanRequest<'_>,
) -> Result<Vec<(&'p LoadedPlugin, Plan)>, PlanError> {
    let mut active = Vec::new();
    for p in plugins.sidecars() {
        if req.left_out.iter().any(|n| n == p.name()) {
            continue;
        }
        let plan = p.prepare(req.bottle, &settings_json(req.settings, p.name()))?;
        if plan.active {
            active.push((p, plan));
        }
    }
    Ok(active)
}

/// What the plans add up to, once checked against each other.
struct Resolved {
    /// Staged file paths, with the plugin staging each.
    files: BTreeMap<String, String>,
    /// Where each CA's files go.
    cas: Vec<CaPaths>,
    /// The winning endpoint of each name, with the plugin offering it.
    endpoints: Vec<(String, Endpoint)>,
    /// The CA keys no other plugin may mount.
    state_guard: StateGuard,
    /// Whether any CA is one the agent must trust.
    agent_trusts_cas: bool,
    /// Every secret, with the plugin asking for it.
    secrets: Vec<(String, SecretEnv)>,
}

/// Resolve: files and CAs must not collide; endpoints pick a winner per name; secrets carry
/// their plugin's prefix.
fn resolve(active: &[(&LoadedPlugin, Plan)]) -> Result<Resolved, PlanError> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut ca_ids: BTreeMap<&str, &str> = BTreeMap::new();
    let mut endpoints: BTreeMap<&str, (&str, &Endpoint)> = BTreeMap::new();
    let mut cas = Vec::new();
    let mut state_guard = StateGuard::default();
    let mut agent_trusts_cas = false;
    let mut secrets = Vec::new();
    for (p, plan) in active {
        let name = p.name();
        for f in &plan.files {
            check_file(name, &f.path, f.mode)?;
            if let Some(first) = files.insert(f.path.clone(), name.to_owned()) {
                return Err(conflict(format!("staged file `{}`", f.path), &first, name));
            }
        }
        for ca in &plan.cas {
            if !safe_relative(&ca.id) || ca.id.contains('/') {
                return Err(PlanError::Invalid {
                    plugin: name.to_owned(),
                    detail: format!("CA id {:?} must be a plain name", ca.id),
                });
            }
            if let Some(first) = ca_ids.insert(&ca.id, name) {
                return Err(conflict(format!("CA `{}`", ca.id), first, name));
            }
            agent_trusts_cas |= ca.trusted_by_agent;
            let paths = ca_paths(ca);
            for key in std::iter::once(&paths.key).chain(&paths.combined) {
                state_guard.ca_keys.insert(key.clone(), name.to_owned());
            }
            cas.push(paths);
        }
        for e in &plan.provides {
            match endpoints.get(e.name.as_str()) {
                Some((_, old)) if old.priority > e.priority => {}
                Some((first, old)) if old.priority == e.priority && old.url != e.url => {
                    return Err(conflict(
                        format!("endpoint `{}` at priority {}", e.name, e.priority),
                        first,
                        name,
                    ));
                }
                _ => {
                    endpoints.insert(&e.name, (name, e));
                }
            }
        }
        for s in &plan.secrets {
            check_secret_name(name, &s.name, active.iter().map(|(p, _)| p.name()))?;
            secrets.push((name.to_owned(), s.clone()));
        }
    }
    Ok(Resolved {
        files,
        cas,
        endpoints: endpoints
            .into_values()
            .map(|(plugin, e)| (plugin.to_owned(), e.clone()))
            .collect(),
        state_guard,
        agent_trusts_cas,
        secrets,
    })
}

/// Phase 2: every active sidecar's `render`, then each fragment checked against its plugin's
/// grants (once all are rendered: some capabilities are about what the others hold).
fn render_and_check(
    plugins: &PluginSet,
    req: &PlanRequest<'_>,
    active: &[(&LoadedPlugin, Plan)],
    resolved: &Resolved,
) -> Result<Vec<(String, Fragment)>, PlanError> {
    let ctx = RenderContext {
        bottle: req.bottle.clone(),
        cas: resolved.cas.clone(),
        endpoints: resolved.endpoints.iter().map(|(_, e)| e.clone()).collect(),
    };
    let mut fragments = Vec::new();
    for (p, _) in active {
        let fragment = p.render(&ctx, &settings_json(req.settings, p.name()))?;
        fragments.push((p.name().to_owned(), fragment));
    }
    let mut neighbours =
        policy::Neighbours::new(plugins.all().iter().map(|p| p.name()), &fragments);
    neighbours.docker_socket = req.docker_socket.map(str::to_owned);
    neighbours.builtins = active
        .iter()
        .filter(|(p, _)| is_builtin(p))
        .map(|(p, _)| p.name().to_owned())
        .collect();
    for ((p, plan), (_, fragment)) in active.iter().zip(&fragments) {
        policy::check(
            &policy::Checked {
                name: p.name(),
                builtin: is_builtin(p),
                secrets: &plan.secrets,
                provides: &plan.provides,
                neighbours: &neighbours,
            },
            fragment,
            req.grants,
            req.declared,
            &resolved.state_guard,
        )?;
    }
    Ok(fragments)
}

/// Whether `p` is the built-in of its name (not a `--plugin-dir` replacement).
fn is_builtin(p: &LoadedPlugin) -> bool {
    matches!(p.source(), crate::plugin::PluginSource::Builtin(_))
}

/// Phase 3: the backend's documents for the merged stack; none may land on a staged file.
fn render_backend(
    backend: &LoadedPlugin,
    req: &PlanRequest<'_>,
    stack: &Stack,
    resolved: &Resolved,
) -> Result<Deployment, PlanError> {
    let deployment = backend.render_backend(stack, &settings_json(req.settings, backend.name()))?;
    for d in &deployment.documents {
        check_file(backend.name(), &d.path, d.mode)?;
        if let Some(first) = resolved.files.get(d.path.as_str()) {
            return Err(conflict(
                format!("file `{}`", d.path),
                first,
                backend.name(),
            ));
        }
    }
    Ok(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(plugin: &str, secret: &str, active: &[&str]) -> Result<(), String> {
        check_secret_name(plugin, secret, active.iter().copied()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_secret_carries_its_plugins_prefix_and_no_other_ones() {
        check("egress", "EGRESS_TOKEN_0", &["egress", "pipelock"]).unwrap();
        let err = check("egress", "GITHUB_TOKEN", &["egress"]).unwrap_err();
        assert!(
            err.contains("must be an env name starting with `EGRESS_`"),
            "{err}"
        );
        let err = check("egress", "EGRESS_BAD-NAME", &["egress"]).unwrap_err();
        assert!(err.contains("must be an env name"), "{err}");
        let err = check("git-gate", "GIT_GATE_KEY", &["git", "git-gate"]).unwrap_err();
        assert!(err.contains("plugin `git`'s prefix `GIT_`"), "{err}");
        let err = check("git", "GIT_GATE_KEY", &["git", "git-gate"]).unwrap_err();
        assert!(
            err.contains("plugin `git-gate`'s prefix `GIT_GATE_`"),
            "{err}"
        );
    }
}
