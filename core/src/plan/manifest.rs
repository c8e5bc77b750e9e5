//! Agent manifests: YAML in, a validated [`Manifest`] out.
//!
//! Raw serde types with `deny_unknown_fields` catch typos with the YAML parser's line and
//! column; the checks after that locate the offending text themselves. Every error names the
//! file, the line and column, the field, and the fix.

use crate::hostenv::HostEnv;
use crate::model::{Agent, Bottle, EgressRoute, EnvMap, GitUpstream, RouteAuth};
use crate::plan::policy::{Declared, Grant, Grants};
use crate::run::confine::{Resources, UserChoice};
use bottle_contract::egress::dlp::DlpPolicy;
use bottle_contract::gate::PushPolicy;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Env names bottle sets on the agent itself; a manifest may not set them.
pub const RESERVED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
];

/// The backend used when the manifest names none.
pub const DEFAULT_BACKEND: &str = "docker";

/// The plugin the manifest's `git:` section is for (it may mount the key files).
pub const GIT_PLUGIN: &str = "git-gate";
/// The plugin the manifest's `egress.routes` are for (it may read their `token_ref`s).
pub const ROUTES_PLUGIN: &str = "egress";

/// Hosts every agent may reach unless `egress.default_allowlist: false`: the agent's own API
/// and its telemetry. Both pipelock and egress see them (through [`Bottle::allowlist`]).
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "api.anthropic.com",
    "statsig.anthropic.com",
    "sentry.io",
    "claude.ai",
    "platform.claude.com",
    "downloads.claude.ai",
    "raw.githubusercontent.com",
];

/// A manifest error: where, which field, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field path (`egress.routes[0].auth`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.field, self.message)
        }
    }
}

/// How the host's working dir reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CwdMode {
    /// Your dir at the agent's workdir, as a layer the agent writes into; its work comes back
    /// into your dir at the end ([`crate::plan::workdir`]).
    #[default]
    Mount,
    /// Copied into the agent at launch; the host copy is untouched.
    Copy,
    /// Not shared.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    image: String,
    command: Option<Vec<String>>,
    workdir: Option<String>,
    #[serde(default)]
    cwd: CwdMode,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    git: Vec<RawGit>,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    supervise: bool,
    backend: Option<String>,
    #[serde(default)]
    plugins: BTreeMap<String, Option<serde_yaml::Mapping>>,
    user: Option<String>,
    resources: Option<RawResources>,
    // Gone keys, parsed only to say what replaced them.
    cred_proxy: Option<IgnoredAny>,
    ssh: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory: Option<String>,
    pids: Option<i64>,
    cpus: Option<f64>,
    bundle: Option<RawLimits>,
}

/// `resources.bundle`: the sidecar bundle's limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    pids: Option<i64>,
    cpus: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    name: String,
    url: String,
    key: String,
    known_host: Option<String>,
    #[serde(default)]
    push: RawPush,
}

/// `git[i].push`: what the agent may push to that repo. Left out: its own branches
/// (`bottle/<agent>/*`), fast-forward only, no deletes, tags or CI changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    /// Branch patterns (`bottle/me/*`) or full ref patterns (`refs/heads/…`); left out, the
    /// agent's own branches.
    allow: Option<Vec<String>>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    delete: bool,
    #[serde(default)]
    tags: bool,
    #[serde(default)]
    allow_ci_changes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allowlist: Vec<String>,
    #[serde(default = "yes")]
    default_allowlist: bool,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    hosts: BTreeMap<String, String>,
    upstream_ca: Option<String>,
    #[serde(default)]
    dlp: DlpPolicy,
}

impl Default for RawEgress {
    fn default() -> Self {
        RawEgress {
            allowlist: Vec::new(),
            default_allowlist: true,
            routes: Vec::new(),
            hosts: BTreeMap::new(),
            upstream_ca: None,
            dlp: DlpPolicy::default(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: String,
    #[serde(default)]
    path_allowlist: Vec<String>,
    auth: Option<RawAuth>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    allow: Vec<bottle_contract::egress::RequestRule>,
    #[serde(default)]
    deny: Vec<bottle_contract::egress::RequestRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    scheme: Option<String>,
    header: Option<String>,
    token_ref: Option<String>,
}

/// A validated agent manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read from.
    pub file: PathBuf,
    /// Agent name (file stem).
    pub name: String,
    /// How the host cwd reaches the agent.
    pub cwd: CwdMode,
    /// The agent.
    pub agent: Agent,
    /// Git upstreams.
    pub git: Vec<GitUpstream>,
    /// `git[i].push`, by repo name, where it differs from the default (branches,
    /// fast-forward only).
    pub git_push: BTreeMap<String, PushPolicy>,
    /// Extra allowed hosts (`egress.allowlist`), lower case, in manifest order.
    pub allowlist: Vec<String>,
    /// Whether [`DEFAULT_ALLOWLIST`] is allowed too (`egress.default_allowlist`, default true).
    pub default_allowlist: bool,
    /// Egress routes.
    pub routes: Vec<EgressRoute>,
    /// Their request rules (`methods`, `allow`, `deny`), by each route's place in
    /// [`Manifest::routes`] (only routes that have any).
    pub route_rules: RouteRuleMap,
    /// Supervise on.
    pub supervise: bool,
    /// Backend name.
    pub backend: String,
    /// Per-plugin settings (without `grants`).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Per-plugin grants.
    pub grants: Grants,
    /// `egress.upstream_ca`: an extra CA egress trusts upstream (absolute host path).
    pub upstream_ca: Option<String>,
    /// `egress.dlp`: what DLP does with a finding, its exceptions and extra detectors.
    pub dlp: DlpPolicy,
    /// `user:`: whom the agent runs as.
    pub user: UserChoice,
    /// `resources:`: the agent's limits.
    pub resources: Resources,
    /// `resources.bundle`: the sidecar bundle's limits.
    pub bundle_resources: Resources,
    /// SHA-256 of the text this was parsed from (hex): what the user confirms.
    pub digest: String,
    /// The text itself: a live approval re-plans from what was run, not from the file as it
    /// may have been edited since.
    pub text: String,
}

impl Manifest {
    /// Hosts allowed besides the route hosts: the manifest's, then the defaults it keeps.
    pub fn allowlist_with_defaults(&self) -> Vec<String> {
        let mut hosts = self.allowlist.clone();
        if self.default_allowlist {
            for h in DEFAULT_ALLOWLIST {
                if !hosts.iter().any(|x| x == h) {
                    hosts.push((*h).to_owned());
                }
            }
        }
        hosts
    }

    /// Every host the agent may reach: the manifest's allowlist, route hosts, then the defaults.
    pub fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts = self.allowlist.clone();
        let defaults = DEFAULT_ALLOWLIST.iter().filter(|_| self.default_allowlist);
        for h in self
            .routes
            .iter()
            .map(|r| r.host.as_str())
            .chain(defaults.copied())
        {
            if !hosts.iter().any(|x| x == h) {
                hosts.push(h.to_owned());
            }
        }
        hosts
    }

    /// The bottle every sidecar sees, for `slug`. Its `allowlist` includes the defaults, so
    /// pipelock and egress allow the same hosts.
    pub fn bottle(&self, slug: &str) -> Bottle {
        Bottle {
            slug: slug.to_owned(),
            agent: self.agent.clone(),
            git: self.git.clone(),
            allowlist: self.allowlist_with_defaults(),
            routes: self.routes.clone(),
            supervise: self.supervise,
        }
    }

    /// What the manifest itself declares for the plugin its section is for, which then needs
    /// no grant for it: git key files for [`GIT_PLUGIN`], routes' `token_ref`s and
    /// `egress.upstream_ca` for [`ROUTES_PLUGIN`].
    pub fn declared(&self) -> Declared {
        Declared {
            paths: self
                .git
                .iter()
                .map(|g| (g.key_file.clone(), GIT_PLUGIN.to_owned()))
                .chain(
                    self.upstream_ca
                        .iter()
                        .map(|p| (p.clone(), ROUTES_PLUGIN.to_owned())),
                )
                .collect(),
            host_env: self
                .routes
                .iter()
                .filter_map(|r| r.auth.as_ref())
                .map(|a| (a.token_ref.clone(), ROUTES_PLUGIN.to_owned()))
                .collect(),
        }
    }

    /// Env names the agent gets from the host (names only).
    pub fn secret_names(&self) -> &[String] {
        &self.agent.secret_env
    }
}

/// No manifest where `bottle run AGENT` looked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// A path was given and is no file.
    #[error("{0}: no such manifest file")]
    NoFile(String),
    /// A name was given and no dir has it.
    #[error(
        "no manifest for agent `{agent}`; looked at {}; create one there or pass a path",
        .searched.join(", ")
    )]
    NotFound {
        /// The name asked for.
        agent: String,
        /// Every file tried.
        searched: Vec<String>,
    },
}

/// Find the manifest for `agent`: a path, or a name looked up in `./agents/` then the user's
/// `config_dir` (`agents/<name>.yaml` or `.yml`).
pub fn find(
    agent: &str,
    project_dir: &Path,
    config_dir: Option<&Path>,
) -> Result<PathBuf, FindError> {
    let as_path = Path::new(agent);
    if agent.contains('/') || agent.ends_with(".yaml") || agent.ends_with(".yml") {
        // Absolute, as a name's is: the state dir and the persisted approvals keep it, and
        // are read from other dirs than this one.
        return if as_path.is_file() {
            Ok(std::path::absolute(as_path).unwrap_or_else(|_| as_path.to_owned()))
        } else {
            Err(FindError::NoFile(agent.to_owned()))
        };
    }
    let mut searched = Vec::new();
    let mut dirs = vec![project_dir.join("agents")];
    if let Some(c) = config_dir {
        dirs.push(c.join("agents"));
    }
    for dir in dirs {
        for ext in ["yaml", "yml"] {
            let p = dir.join(format!("{agent}.{ext}"));
            if p.is_file() {
                return Ok(p);
            }
            searched.push(p.display().to_string());
        }
    }
    Err(FindError::NotFound {
        agent: agent.to_owned(),
        searched,
    })
}

/// Read and validate the manifest at `path` (`~/` paths expand to `env`'s HOME).
pub fn load(path: &Path, env: &HostEnv) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: path.to_owned(),
        line: None,
        column: None,
        field: String::new(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(path, &text, env)
}

/// Builds errors located in one manifest's text.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    /// Walked only when an error needs a position: a good manifest never pays for it.
    spans: std::cell::OnceCell<spans::Spans>,
}

impl<'a> Locator<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        Locator {
            file,
            text,
            spans: std::cell::OnceCell::new(),
        }
    }

    /// An error about `field`, at that field's place in the text (at `needle`, its value,
    /// when that is on the same line); without the field, at the first line outside a comment
    /// that holds `needle`; else without a position.
    fn at(
        &self,
        needle: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        let field = field.into();
        let on_line = |line: usize, from: usize| -> Option<usize> {
            let code = self.text.lines().nth(line.checked_sub(1)?)?;
            let code = code.split(" #").next().unwrap_or(code);
            (!needle.is_empty())
                .then(|| code.get(from.saturating_sub(1)..)?.find(needle))
                .flatten()
                .map(|c| from + c)
        };
        let spans = self.spans.get_or_init(|| spans::Spans::of(self.text));
        let pos = match spans.find(&field) {
            Some((line, col)) => Some((line, on_line(line, col).unwrap_or(col))),
            None => (!needle.is_empty())
                .then(|| {
                    self.text.lines().enumerate().find_map(|(i, line)| {
                        if line.trim_start().starts_with('#') {
                            return None;
                        }
                        on_line(i + 1, 1).map(|c| (i + 1, c))
                    })
                })
                .flatten(),
        };
        ManifestError {
            file: self.file.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field,
            message: message.into(),
        }
    }
}

use bottle_contract::names::{valid_env_name, valid_host};

fn valid_agent_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.len() <= 40
}

/// Split an SSH git URL into host and port: `git@host:path` or `ssh://[user@]host[:port]/path`.
fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit('@').next()?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (hostport, 22),
        };
        let path = rest.split_once('/')?.1;
        return (valid_host(host) && !path.is_empty()).then(|| (host.to_owned(), port));
    }
    if url.contains("://") {
        return None;
    }
    let (userhost, path) = url.split_once(':')?;
    let host = userhost.rsplit('@').next()?;
    (valid_host(host) && !path.is_empty()).then(|| (host.to_owned(), 22))
}

fn expand_home(p: &str, home: Option<&Path>) -> String {
    match (p.strip_prefix("~/"), home.and_then(Path::to_str)) {
        (Some(rest), Some(home)) => format!("{}/{rest}", home.trim_end_matches('/')),
        _ => p.to_owned(),
    }
}

/// Parse and validate manifest `text` read from `file` (`~/` paths expand to `env`'s HOME):
/// one function per section, each turning raw YAML values into typed ones.
pub fn parse(file: &Path, text: &str, env: &HostEnv) -> Result<Manifest, ManifestError> {
    let home = env.home();
    let expand = |p: &str| expand_home(p, home.as_deref());
    let loc = Locator::new(file, text);
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !valid_agent_name(&name) {
        return Err(loc.at("", "", format!(
            "the agent name `{name}` comes from the file name and must be lower-case letters, digits and `-`; rename the file"
        )));
    }
    let raw = parse_yaml(file, text)?;
    refuse_retired(&loc, &raw)?;
    let agent = parse_agent(
        &loc,
        name.clone(),
        raw.image,
        raw.command,
        raw.workdir,
        raw.env,
        raw.secrets,
    )?;
    let (git, git_push) = parse_git(&loc, raw.git, &expand, &name)?;
    let allowlist = parse_allowlist(&loc, raw.egress.allowlist)?;
    let (routes, route_rules) = parse_routes(&loc, raw.egress.routes)?;
    let egress_hosts = parse_egress_hosts(&loc, raw.egress.hosts)?;
    let upstream_ca = parse_upstream_ca(&loc, raw.egress.upstream_ca, &expand)?;
    let dlp = parse_dlp(&loc, raw.egress.dlp)?;
    let user = match raw.user {
        None => UserChoice::Invoker,
        Some(u) => UserChoice::parse(&u).map_err(|e| loc.at(&u, "user", e))?,
    };
    let (resources, bundle_resources) = parse_resources(&loc, raw.resources)?;
    let (mut settings, grants) = parse_plugins(&loc, raw.plugins)?;
    pass_egress_extras(
        &loc,
        &mut settings,
        &egress_hosts,
        upstream_ca.as_deref(),
        &route_rules,
        &dlp,
    )?;
    pass_git_push(&loc, &mut settings, &git_push)?;
    Ok(Manifest {
        file: file.to_owned(),
        agent,
        name,
        cwd: raw.cwd,
        git,
        git_push,
        allowlist,
        default_allowlist: raw.egress.default_allowlist,
        routes,
        route_rules,
        supervise: raw.supervise,
        backend: raw.backend.unwrap_or_else(|| DEFAULT_BACKEND.to_owned()),
        settings,
        grants,
        upstream_ca,
        dlp,
        user,
        resources,
        bundle_resources,
        digest: crate::plan::consent::digest(text.as_bytes()),
        text: text.to_owned(),
    })
}

/// The YAML itself, with serde's error turned into one located line.
fn parse_yaml(file: &Path, text: &str) -> Result<RawManifest, ManifestError> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (Some(l.line()), Some(l.column())))
            .unwrap_or((None, None));
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        // serde_yaml prefixes nested errors with the field path: `egress.routes[0]: unknown field …`.
        let (field, msg) = match msg.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') => (path.to_owned(), rest.to_owned()),
            _ => (String::new(), msg),
        };
        let hint = if msg.contains("unknown field") {
            "; check the spelling (see the example agents in agents/)"
        } else if msg.contains("missing field") {
            "; add it"
        } else {
            ""
        };
        ManifestError {
            file: file.to_owned(),
            line,
            column,
            field,
            message: format!("{msg}{hint}"),
        }
    })
}

/// Keys of the original system that bottle replaced: each error says what took its place.
fn refuse_retired(loc: &Locator<'_>, raw: &RawManifest) -> Result<(), ManifestError> {
    if raw.cred_proxy.is_some() {
        return Err(loc.at("cred_proxy", "cred_proxy", "`cred_proxy` was replaced by egress routes; move each entry to `egress.routes` as `{host, path_allowlist, auth: {scheme, token_ref}}`"));
    }
    if raw.ssh.is_some() {
        return Err(loc.at("ssh", "ssh", "`ssh` upstreams were replaced by git-gate; list each repo under `git:` as `{name, url, key, known_host}`"));
    }
    Ok(())
}

/// The agent's container: image, workdir, command, env and the secrets it gets.
fn parse_agent(
    loc: &Locator<'_>,
    name: String,
    image: String,
    command: Option<Vec<String>>,
    workdir: Option<String>,
    raw_env: BTreeMap<String, String>,
    secrets: Vec<String>,
) -> Result<Agent, ManifestError> {
    if image.trim().is_empty() {
        return Err(loc.at(
            "image",
            "image",
            "the agent image is empty; name a local image, e.g. `bottle-agent:latest`",
        ));
    }
    let workdir = workdir.unwrap_or_else(|| "/workspace".into());
    if !workdir.starts_with('/') {
        return Err(loc.at(
            &workdir,
            "workdir",
            "must be an absolute path inside the container, e.g. `/workspace`",
        ));
    }
    let command = command.unwrap_or_else(|| vec!["claude".into()]);
    if command.is_empty() || command[0].is_empty() {
        return Err(loc.at(
            "command",
            "command",
            "the command is empty; give the agent's program and arguments, e.g. `[claude]`",
        ));
    }

    let mut env = EnvMap::new();
    for (k, v) in raw_env {
        if !valid_env_name(&k) {
            return Err(loc.at(
                &k,
                format!("env.{k}"),
                "env names are letters, digits and `_`, not starting with a digit",
            ));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(loc.at(
                &k,
                format!("env.{k}"),
                "bottle sets this itself (proxy and CA wiring); remove it",
            ));
        }
        env.insert(k, v);
    }
    let mut secret_env = Vec::new();
    for (i, s) in secrets.into_iter().enumerate() {
        let field = format!("secrets[{i}]");
        if !valid_env_name(&s) {
            return Err(loc.at(
                &s,
                field,
                "secrets are env var names (the value is read from your env at launch)",
            ));
        }
        if env.contains_key(&s) || RESERVED_ENV.contains(&s.as_str()) || secret_env.contains(&s) {
            return Err(loc.at(
                &s,
                field,
                format!("`{s}` is set twice; keep it in either `env` or `secrets`"),
            ));
        }
        secret_env.push(s);
    }

    Ok(Agent {
        name,
        image,
        command,
        workdir,
        env,
        secret_env,
    })
}

/// `git:`: the upstreams git-gate serves, each with its key, pinned host key and push policy.
fn parse_git(
    loc: &Locator<'_>,
    raw: Vec<RawGit>,
    expand_home: &dyn Fn(&str) -> String,
    agent: &str,
) -> Result<(Vec<GitUpstream>, BTreeMap<String, PushPolicy>), ManifestError> {
    let mut git = Vec::new();
    let mut push = BTreeMap::new();
    let mut git_names = BTreeSet::new();
    for (i, g) in raw.into_iter().enumerate() {
        let field = format!("git[{i}]");
        if g.name.is_empty()
            || !g
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || g.name.starts_with('.')
        {
            return Err(loc.at(&g.name, format!("{field}.name"), "repo names are letters, digits, `-`, `_` and `.`; the agent uses git://git-gate/<name>.git"));
        }
        if !git_names.insert(g.name.clone()) {
            return Err(loc.at(
                &g.name,
                format!("{field}.name"),
                format!(
                    "`{}` is listed twice; give each upstream its own name",
                    g.name
                ),
            ));
        }
        let Some((host, port)) = ssh_host_port(&g.url) else {
            return Err(loc.at(&g.url, format!("{field}.url"), "not an SSH git URL; use `git@host:org/repo.git` or `ssh://git@host[:port]/org/repo.git`"));
        };
        let key_file = expand_home(&g.key);
        if !key_file.starts_with('/') {
            let fix = if g.key.starts_with("~/") {
                "`~/` needs HOME, which is not set (or not absolute); set HOME or give an absolute path"
            } else {
                "the SSH key path must be absolute or start with `~/`"
            };
            return Err(loc.at(&g.key, format!("{field}.key"), fix));
        }
        let scan = if port == 22 {
            format!("ssh-keyscan {host}")
        } else {
            format!("ssh-keyscan -p {port} {host}")
        };
        let known_host_key = match g.known_host.map(|k| k.trim().to_owned()) {
            Some(k) => {
                let parts: Vec<&str> = k.split_whitespace().collect();
                if parts.len() != 2
                    || !parts[0].starts_with("ssh-") && !parts[0].starts_with("ecdsa-")
                {
                    return Err(loc.at(&k, format!("{field}.known_host"), format!("give the host key as `<type> <base64>`, e.g. a line of `{scan}` without the host name")));
                }
                k
            }
            None => {
                return Err(loc.at(&g.name, format!("{field}.known_host"), format!("missing: git-gate never trusts an SSH host on first use; add `known_host: <type> <base64>` (a line of `{scan}`, without the host name; check it against the host's published fingerprints)")));
            }
        };
        // Every repo's policy is spelled out for git-gate, the default one included.
        let policy = parse_push(loc, &field, g.push, agent)?;
        push.insert(g.name.clone(), policy);
        git.push(GitUpstream {
            name: g.name,
            url: g.url,
            host,
            port,
            key_file,
            known_host_key: Some(known_host_key),
        });
    }

    Ok((git, push))
}

/// `git[i].push`: branch patterns become full ref patterns; no `allow` is the agent's own
/// branches.
fn parse_push(
    loc: &Locator<'_>,
    field: &str,
    raw: RawPush,
    agent: &str,
) -> Result<PushPolicy, ManifestError> {
    let Some(raw_allow) = raw.allow else {
        return Ok(PushPolicy {
            allow_force: raw.force,
            allow_delete: raw.delete,
            allow_tags: raw.tags,
            allow_ci_changes: raw.allow_ci_changes,
            ..PushPolicy::for_agent(agent)
        });
    };
    let mut allow = Vec::new();
    for (j, p) in raw_allow.iter().enumerate() {
        let ok = !p.is_empty()
            && !p.contains("..")
            && !p.starts_with('/')
            && !p.ends_with('/')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./*".contains(c));
        if !ok {
            return Err(loc.at(p, format!("{field}.push.allow[{j}]"), "give a branch pattern like `bottle/my-agent/*` (letters, digits, `-_./`, `*` for any run of characters)"));
        }
        allow.push(if p.starts_with("refs/") {
            p.clone()
        } else {
            format!("refs/heads/{p}")
        });
    }
    if allow.is_empty() {
        return Err(loc.at(
            "allow",
            format!("{field}.push.allow"),
            format!("an empty list lets the agent push nowhere; list branch patterns, `'*'` for any branch, or leave `allow` out for the agent's own (`bottle/{agent}/*`)"),
        ));
    }
    Ok(PushPolicy {
        allow,
        allow_force: raw.force,
        allow_delete: raw.delete,
        allow_tags: raw.tags,
        allow_ci_changes: raw.allow_ci_changes,
        ..PushPolicy::default()
    })
}

/// `egress.allowlist`: bare host names, lower-cased.
fn parse_allowlist(loc: &Locator<'_>, raw: Vec<String>) -> Result<Vec<String>, ManifestError> {
    let mut allowlist = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        if !valid_host(&h) {
            return Err(loc.at(&h, format!("egress.allowlist[{i}]"), "give a bare host name (`pypi.org` or `*.example.com`), without scheme, port or path"));
        }
        allowlist.push(h.to_ascii_lowercase());
    }
    Ok(allowlist)
}

/// The request rules of `egress.routes`, by each route's place (only routes that have any).
pub type RouteRuleMap = BTreeMap<usize, bottle_contract::egress::RouteRules>;

/// `egress.routes`: one per host, with path prefixes, the credential egress injects and the
/// request rules (`methods`, `allow`, `deny`).
fn parse_routes(
    loc: &Locator<'_>,
    raw: Vec<RawRoute>,
) -> Result<(Vec<EgressRoute>, RouteRuleMap), ManifestError> {
    let mut routes = Vec::new();
    let mut rules = RouteRuleMap::new();
    let mut route_hosts = BTreeSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let field = format!("egress.routes[{i}]");
        if !valid_host(&r.host) || r.host.starts_with("*.") {
            return Err(loc.at(
                &r.host,
                format!("{field}.host"),
                "give a bare host name (`api.github.com`), without scheme, port, path or wildcard",
            ));
        }
        if !route_hosts.insert(r.host.to_ascii_lowercase()) {
            return Err(loc.at(
                &r.host,
                format!("{field}.host"),
                format!("`{}` has two routes; merge them into one", r.host),
            ));
        }
        for (j, p) in r.path_allowlist.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(loc.at(
                    p,
                    format!("{field}.path_allowlist[{j}]"),
                    "path prefixes start with `/`",
                ));
            }
        }
        let auth = r.auth.map(|a| parse_auth(loc, &field, a)).transpose()?;
        let route_rules = bottle_contract::egress::RouteRules {
            methods: r.methods,
            allow: r.allow,
            deny: r.deny,
        };
        route_rules.validate().map_err(|(at, why)| {
            loc.at(
                "",
                format!("{field}.{at}"),
                format!(
                    "{why}; a rule is `{{methods: [POST], path: /repos/org/*/hooks}}` (see the README's routes)"
                ),
            )
        })?;
        if !route_rules.is_empty() {
            rules.insert(i, route_rules);
        }
        routes.push(EgressRoute {
            host: r.host.to_ascii_lowercase(),
            path_allowlist: r.path_allowlist,
            auth,
        });
    }

    Ok((routes, rules))
}

/// A route's `auth`: a scheme (`Authorization: <scheme> <token>`) or a header of its own, and
/// the host env var holding the token.
fn parse_auth(loc: &Locator<'_>, field: &str, auth: RawAuth) -> Result<RouteAuth, ManifestError> {
    match auth {
            RawAuth {
                scheme: None,
                header: None,
                token_ref: None,
            } => Err(loc.at("auth", format!("{field}.auth"), "`auth: {}` is empty; give `{scheme: Bearer, token_ref: ENV_NAME}` or `{header: x-api-key, token_ref: ENV_NAME}`, or remove `auth`")),
            RawAuth {
                scheme,
                header,
                token_ref,
            } => {
                let scheme = match (scheme, header) {
                    (Some(_), Some(h)) => {
                        return Err(loc.at(
                            &h,
                            format!("{field}.auth"),
                            "give `scheme` (sent as `Authorization: <scheme> <token>`) or `header` (the token as that header's value), not both",
                        ));
                    }
                    (Some(s), None) if s == "Bearer" || s == "token" => s,
                    (Some(s), None) => {
                        return Err(loc.at(
                            &s,
                            format!("{field}.auth.scheme"),
                            "use `Bearer` or `token` (or `header: NAME` for a header of its own)",
                        ));
                    }
                    (None, Some(h)) => {
                        let lower = h.to_ascii_lowercase();
                        let token_char = |c: char| c.is_ascii_alphanumeric() || "-_".contains(c);
                        if lower.is_empty()
                            || !lower.chars().all(token_char)
                            || matches!(
                                lower.as_str(),
                                "host"
                                    | "cookie"
                                    | "proxy-authorization"
                                    | "connection"
                                    | "content-length"
                                    | "transfer-encoding"
                            )
                        {
                            return Err(loc.at(
                                &h,
                                format!("{field}.auth.header"),
                                "give a header name egress may set, e.g. `x-api-key` (letters, digits, `-`; not Host, Cookie or a hop-by-hop header)",
                            ));
                        }
                        format!("header:{lower}")
                    }
                    (None, None) => {
                        return Err(loc.at(
                            "auth",
                            format!("{field}.auth.scheme"),
                            "missing; use `scheme: Bearer` (or `token`), or `header: x-api-key`",
                        ));
                    }
                };
                let token_ref = token_ref.ok_or_else(|| {
                    loc.at(
                        "auth",
                        format!("{field}.auth.token_ref"),
                        "missing; name the host env var holding the token",
                    )
                })?;
                if !valid_env_name(&token_ref) {
                    return Err(loc.at(&token_ref, format!("{field}.auth.token_ref"), "name a host env var (letters, digits, `_`); the value is never written to the manifest"));
                }
                Ok(RouteAuth { scheme, token_ref })
            }
        }
}

/// `egress.hosts`: static addresses egress resolves names to.
fn parse_egress_hosts(
    loc: &Locator<'_>,
    raw: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut egress_hosts = BTreeMap::new();
    for (name, addr) in raw {
        let field = format!("egress.hosts.{name}");
        if !valid_host(&name) || name.starts_with("*.") {
            return Err(loc.at(
                &name,
                field,
                "give a bare host name (`registry.internal`), no wildcard, scheme or port",
            ));
        }
        let entry = match addr.parse::<bottle_contract::egress::hosts::StaticHost>() {
            Ok(entry) => entry,
            Err(why) => return Err(loc.at(&addr, field, &why)),
        };
        if let bottle_contract::egress::hosts::StaticAddress::Ip(ip) = entry.address
            && let Some(why) = never_static(ip)
        {
            return Err(loc.at(&addr, field, &why));
        }
        egress_hosts.insert(name.to_ascii_lowercase(), entry.to_string());
    }
    Ok(egress_hosts)
}

/// Why egress must never be sent to `ip` by name, if it must not: an address that is not
/// where the user thinks it is (egress runs in the bundle, so loopback is the bundle's own,
/// where its daemons listen), or where cloud metadata answers.
fn never_static(ip: std::net::IpAddr) -> Option<String> {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let link_local = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if ip.is_loopback() {
        Some(format!(
            "{ip} is the sidecar bundle's own loopback, where bottle's daemons listen, not this machine: for a service on this machine give `host-gateway:PORT`"
        ))
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some(format!(
            "{ip} is no address to send requests to: give the service's own address"
        ))
    } else if link_local {
        Some(format!(
            "{ip} is link-local, where a cloud's metadata service answers with the machine's credentials: give the service's own address"
        ))
    } else {
        None
    }
}

/// `egress.dlp`: checked whole, its extra detectors compiled here so a bad regex is the
/// manifest's error, not the daemon's at start.
fn parse_dlp(loc: &Locator<'_>, dlp: DlpPolicy) -> Result<DlpPolicy, ManifestError> {
    dlp.validate().map_err(|(at, why)| {
        let needle = at.rsplit('.').next().unwrap_or("dlp").to_owned();
        loc.at(&needle, format!("egress.dlp.{at}"), why)
    })?;
    for (i, x) in dlp.extra.iter().enumerate() {
        bottle_dlp::ExtraRule::new(&x.id, &x.regex, None).map_err(|e| {
            loc.at(
                &x.regex,
                format!("egress.dlp.extra[{i}].regex"),
                format!("not a usable regular expression: {e}"),
            )
        })?;
    }
    Ok(dlp)
}

/// `egress.upstream_ca`: a readable PEM CA certificate egress trusts upstream.
fn parse_upstream_ca(
    loc: &Locator<'_>,
    raw: Option<String>,
    expand_home: &dyn Fn(&str) -> String,
) -> Result<Option<String>, ManifestError> {
    Ok(match raw {
        None => None,
        Some(p) => {
            let path = expand_home(&p);
            if !path.starts_with('/') {
                return Err(loc.at(
                    &p,
                    "egress.upstream_ca",
                    "give an absolute path (or one starting with `~/`) to a PEM CA certificate",
                ));
            }
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                loc.at(&p, "egress.upstream_ca", format!("cannot read {path}: {e}"))
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(loc.at(
                    &p,
                    "egress.upstream_ca",
                    format!("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"),
                ));
            }
            Some(path)
        }
    })
}

/// `plugins:`: each plugin's settings table, and the grants taken out of it.
fn parse_plugins(
    loc: &Locator<'_>,
    raw: BTreeMap<String, Option<serde_yaml::Mapping>>,
) -> Result<(BTreeMap<String, serde_json::Value>, Grants), ManifestError> {
    let mut settings = BTreeMap::new();
    let mut grants = Grants::default();
    for (plugin, table) in raw {
        let mut table = table.unwrap_or_default();
        if let Some(g) = table.remove("grants") {
            let list: Vec<String> = serde_yaml::from_value(g).map_err(|_| {
                loc.at(
                    "grants",
                    format!("plugins.{plugin}.grants"),
                    "must be a list of grants, e.g. `[privileged, \"host-path:/data\"]`",
                )
            })?;
            for g in list {
                let grant: Grant = g
                    .parse()
                    .map_err(|e: String| loc.at(&g, format!("plugins.{plugin}.grants"), e))?;
                if g == "root" {
                    return Err(loc.at(
                        &g,
                        format!("plugins.{plugin}.grants"),
                        "the agent runs as root only when you say so at each launch: pass `--grant agent=root`",
                    ));
                }
                grants.add(&plugin, grant);
            }
        }
        let json = serde_json::to_value(&table).map_err(|e| {
            loc.at(
                &plugin,
                format!("plugins.{plugin}"),
                format!("settings must be plain YAML data: {e}"),
            )
        })?;
        settings.insert(plugin, json);
    }
    Ok((settings, grants))
}

/// The 0.1.0 `bottle` record has no field for `egress.hosts`, `egress.upstream_ca`,
/// `egress.dlp` and a route's request rules, so egress gets them in its settings table (which may not set them
/// itself).
fn pass_egress_extras(
    loc: &Locator<'_>,
    settings: &mut BTreeMap<String, serde_json::Value>,
    egress_hosts: &BTreeMap<String, String>,
    upstream_ca: Option<&str>,
    route_rules: &RouteRuleMap,
    dlp: &DlpPolicy,
) -> Result<(), ManifestError> {
    if let Some(table) = settings.get(ROUTES_PLUGIN) {
        if table.get("route_rules").is_some() {
            return Err(loc.at(
                "route_rules",
                format!("plugins.{ROUTES_PLUGIN}.route_rules"),
                "set a route's `methods`, `allow` and `deny` under `egress.routes` instead",
            ));
        }
        // Whatever the manifest's egress section says: a settings table that set these would
        // pass what the manifest's checks never saw.
        for key in ["hosts", "upstream_ca", "dlp"] {
            if table.get(key).is_some() {
                return Err(loc.at(
                    key,
                    format!("plugins.{ROUTES_PLUGIN}.{key}"),
                    format!("set it as `egress.{key}` instead"),
                ));
            }
        }
        // Only a human's approval makes these (`bottle approve --for/--uses`).
        for key in ["route_grants", "ended_grants"] {
            if table.get(key).is_some() {
                return Err(loc.at(
                    key,
                    format!("plugins.{ROUTES_PLUGIN}.{key}"),
                    "bottle writes this from `bottle approve --for/--uses`; list the host under `egress.allowlist` or `egress.routes` instead",
                ));
            }
        }
    }
    if !dlp.is_default() {
        let table = settings
            .entry(ROUTES_PLUGIN.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        table["dlp"] =
            serde_json::to_value(dlp).map_err(|e| loc.at("dlp", "egress.dlp", e.to_string()))?;
    }
    if !route_rules.is_empty() {
        let table = settings
            .entry(ROUTES_PLUGIN.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        table["route_rules"] = serde_json::to_value(route_rules)
            .map_err(|e| loc.at("routes", "egress.routes", e.to_string()))?;
    }
    if !egress_hosts.is_empty() || upstream_ca.is_some() {
        let table = settings
            .entry(ROUTES_PLUGIN.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        if !egress_hosts.is_empty() {
            table["hosts"] = serde_json::json!(egress_hosts);
        }
        if let Some(ca) = upstream_ca {
            table["upstream_ca"] = serde_json::json!(ca);
        }
    }

    Ok(())
}

/// The 0.1.0 `git-upstream` record has no push policy, so git-gate gets the manifest's
/// `git[i].push` in its settings table, under `push.<name>` (which it may not set itself).
fn pass_git_push(
    loc: &Locator<'_>,
    settings: &mut BTreeMap<String, serde_json::Value>,
    push: &BTreeMap<String, PushPolicy>,
) -> Result<(), ManifestError> {
    if let Some(table) = settings.get(GIT_PLUGIN)
        && table.get("push").is_some()
    {
        return Err(loc.at(
            "push",
            format!("plugins.{GIT_PLUGIN}.push"),
            "set each repo's policy as `git[i].push` instead",
        ));
    }
    if !push.is_empty() {
        let value = serde_json::to_value(push)
            .map_err(|e| loc.at("push", format!("plugins.{GIT_PLUGIN}.push"), e.to_string()))?;
        let table = settings
            .entry(GIT_PLUGIN.to_owned())
            .or_insert_with(|| serde_json::json!({}));
        table["push"] = value;
    }
    Ok(())
}

/// `resources:`, each field defaulted on its own: the agent's, and under `bundle:` the
/// sidecar bundle's.
fn parse_resources(
    loc: &Locator<'_>,
    raw: Option<RawResources>,
) -> Result<(Resources, Resources), ManifestError> {
    let Some(raw) = raw else {
        return Ok((Resources::default(), Resources::bundle_default()));
    };
    let agent = parse_limits(
        loc,
        "resources",
        RawLimits {
            memory: raw.memory,
            pids: raw.pids,
            cpus: raw.cpus,
        },
        Resources::default(),
    )?;
    let bundle = match raw.bundle {
        Some(b) => parse_limits(loc, "resources.bundle", b, Resources::bundle_default())?,
        None => Resources::bundle_default(),
    };
    Ok((agent, bundle))
}

/// One container's limits under `field`, over `defaults`.
fn parse_limits(
    loc: &Locator<'_>,
    field: &str,
    raw: RawLimits,
    defaults: Resources,
) -> Result<Resources, ManifestError> {
    let mut r = defaults;
    if let Some(m) = raw.memory {
        r.memory = crate::run::confine::parse_size(&m)
            .map_err(|e| loc.at(&m, format!("{field}.memory"), e))?;
        if r.memory < 64 << 20 {
            return Err(loc.at(
                &m,
                format!("{field}.memory"),
                "at least `64m`: Docker refuses less, and an agent needs far more",
            ));
        }
    }
    if let Some(p) = raw.pids {
        if !(16..=1 << 22).contains(&p) {
            return Err(loc.at(
                "pids",
                format!("{field}.pids"),
                format!(
                    "give a process limit from 16 to 4194304 (default {})",
                    defaults.pids
                ),
            ));
        }
        r.pids = p;
    }
    if let Some(c) = raw.cpus {
        if !(c.is_finite() && (0.01..=1024.0).contains(&c)) {
            return Err(loc.at(
                "cpus",
                format!("{field}.cpus"),
                "give a number of CPUs such as `2` or `0.5`",
            ));
        }
        r.nano_cpus = Some((c * 1e9).round() as i64);
    }
    Ok(r)
}

mod spans;
#[cfg(test)]
mod tests;
