//! One bottle's machine: made from the rendered `Smolfile`, started, exec'd into, torn down.
//!
//! The backend plugin renders the Smolfile with the agent's mounts as they are on Docker. Two
//! things need host I/O before smolvm takes it, and are done here:
//!
//! - virtiofs mounts dirs only: every mount whose source is a file is copied into a dir of its
//!   own per target dir (`smolvm/files/…`) and that dir is mounted instead. A file whose target
//!   dir is a system dir (`/etc`, `/usr`, …) is refused: mounting over it would hide the image's.
//! - the copies get the plugin's address rewrites (`smolvm-rewrites.json`: `[[from, to], …]`),
//!   so a staged file that names a daemon (git-gate's gitconfig: `git://git-gate/…`) names the
//!   address the VM reaches it at; then the run's hop token takes the place of
//!   [`bottle_contract::hop::PLACEHOLDER`] (git-gate's path segment, supervise's bearer). Only
//!   these copies hold it, in the bottle's private state dir, gone at `down`.

use crate::engine::Engine;
use crate::probe::{HostFacts, explain_boot_failure};
use bottle_contract::hop::PLACEHOLDER;
use bottle_contract::names::BUNDLE_ADDRESS_PLACEHOLDER;
use bottle_driver_sdk::{ExecPlan, Listed};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rendered Smolfile, in the state dir.
pub const SMOLFILE: &str = "Smolfile";
/// The plugin's address rewrites, in the state dir.
pub const REWRITES: &str = "smolvm-rewrites.json";
/// This driver's dir in the state dir.
pub const DIR: &str = "smolvm";
/// The label naming a machine's bottle.
/// The bottle's log file, which the agent's output is appended to.
pub use bottle_contract::layout::LOG_FILE;

/// Target dirs a file mount may not replace.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
];

/// The machine's name for bottle `slug`.
pub fn name(slug: &str) -> String {
    format!("bottle-{slug}")
}

fn engine_dir(state: &Path) -> PathBuf {
    state.join(DIR).join("engine")
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// A volume of the Smolfile: `SRC:DST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Host path.
    pub source: String,
    /// Path in the VM.
    pub target: String,
    /// `ro`, `rw` or `staged`, when given.
    pub mode: Option<String>,
}

impl Volume {
    /// Parse `SRC:DST[:MODE]`.
    pub fn parse(spec: &str) -> Result<Volume, String> {
        let mut parts: Vec<&str> = spec.split(':').collect();
        let mode = match parts.last() {
            Some(m) if parts.len() >= 3 && ["ro", "rw", "staged"].contains(m) => {
                parts.pop().map(str::to_owned)
            }
            _ => None,
        };
        let target = parts.pop().filter(|t| t.starts_with('/'));
        let source = parts.join(":");
        match target {
            Some(t) if source.starts_with('/') => Ok(Volume {
                source,
                target: t.to_owned(),
                mode,
            }),
            _ => Err(format!(
                "Smolfile volume {spec:?} is no `/host/path:/vm/path[:ro]`"
            )),
        }
    }

    fn spec(&self) -> String {
        match &self.mode {
            Some(m) => format!("{}:{}:{m}", self.source, self.target),
            None => format!("{}:{}", self.source, self.target),
        }
    }
}

/// Apply `rewrites` to `text`, in order.
pub fn rewrite(text: &str, rewrites: &[(String, String)]) -> String {
    rewrites
        .iter()
        .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
}

/// Volumes with every file source gathered into a copy dir per target dir under `files`
/// (rewritten); dir sources unchanged.
pub fn gather_files(
    volumes: &[Volume],
    files: &Path,
    rewrites: &[(String, String)],
) -> Result<Vec<Volume>, String> {
    let mut out = Vec::new();
    let mut dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in volumes {
        let meta = std::fs::metadata(&v.source)
            .map_err(|e| format!("Smolfile volume {}: {e}", v.source))?;
        if meta.is_dir() {
            out.push(v.clone());
            continue;
        }
        if !meta.is_file() {
            return Err(format!("Smolfile volume {}: not a file or dir", v.source));
        }
        let target = Path::new(&v.target);
        let (Some(parent), Some(file_name)) = (target.parent(), target.file_name()) else {
            return Err(format!("Smolfile volume target {} has no dir", v.target));
        };
        let parent = parent.display().to_string();
        if SYSTEM_DIRS.contains(&parent.as_str()) {
            return Err(format!(
                "cannot put the file {} at {} in the VM: virtiofs mounts dirs only, and mounting one over {parent} would hide the image's; the backend plugin must put it in a dir of its own",
                v.source, v.target
            ));
        }
        let dir = dirs
            .entry(parent.clone())
            .or_insert_with(|| files.join(parent.trim_start_matches('/').replace('/', "-")));
        create_private_dir(dir)?;
        let copy = dir.join(file_name);
        if copy.exists() {
            return Err(format!("two Smolfile volumes target {}", v.target));
        }
        let bytes = std::fs::read(&v.source).map_err(|e| format!("{}: {e}", v.source))?;
        let bytes = match String::from_utf8(bytes) {
            Ok(text) => rewrite(&text, rewrites).into_bytes(),
            Err(e) => e.into_bytes(),
        };
        // The agent's user in the VM reads these through virtiofs, as the host's modes say.
        write_new(&copy, &bytes, 0o644)?;
    }
    for (parent, dir) in dirs {
        if out.iter().any(|v| v.target == parent) {
            return Err(format!(
                "a Smolfile volume mounts a dir at {parent}, where files are mounted too"
            ));
        }
        out.push(Volume {
            source: dir.display().to_string(),
            target: parent,
            mode: Some("ro".into()),
        });
    }
    Ok(out)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Write `<state>/smolvm/Smolfile` from the rendered one: file mounts gathered, the image the
/// host saved; its path.
pub fn prepare(
    state: &Path,
    archive: &Path,
    hop_token: Option<&str>,
    bundle_address: Option<&str>,
) -> Result<PathBuf, String> {
    let rendered = state.join(SMOLFILE);
    let text = std::fs::read_to_string(&rendered).map_err(|e| {
        format!(
            "{}: {e}; was the bottle planned with --backend smolmachines?",
            rendered.display()
        )
    })?;
    // An IPv4 address, checked before it goes into TOML and URLs.
    let address = bundle_address
        .map(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .map(|a| a.to_string())
                .map_err(|_| format!("the bundle's address `{a}` is no IPv4 address"))
        })
        .transpose()?;
    let text = match &address {
        Some(a) => text.replace(BUNDLE_ADDRESS_PLACEHOLDER, a),
        None if text.contains(BUNDLE_ADDRESS_PLACEHOLDER) => {
            return Err(
                "the host sent no address for the sidecar bundle, which the agent must reach: bottle and this driver are out of step (reinstall both)"
                    .into(),
            );
        }
        None => text,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", rendered.display()))?;
    let mut rewrites: Vec<(String, String)> = match std::fs::read_to_string(state.join(REWRITES)) {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| format!("{}: {e}", state.join(REWRITES).display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", state.join(REWRITES).display())),
    };
    if let Some(a) = &address {
        rewrites.push((BUNDLE_ADDRESS_PLACEHOLDER.to_owned(), a.clone()));
    }
    match hop_token {
        Some(token) => rewrites.push((PLACEHOLDER.to_owned(), token.to_owned())),
        None if rewrites.iter().any(|(_, to)| to.contains(PLACEHOLDER)) => {
            return Err(
                "the host sent no hop token, which the bundle's daemons ask of the agent: bottle and this driver are out of step (reinstall both)"
                    .into(),
            );
        }
        None => {}
    }
    let volumes: Vec<Volume> = match table.get("volumes") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| "Smolfile volumes must be strings".to_owned())
                    .and_then(Volume::parse)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("Smolfile `volumes` must be a list".into()),
    };
    let dir = state.join(DIR);
    let files = dir.join("files");
    if files.exists() {
        std::fs::remove_dir_all(&files).map_err(|e| format!("{}: {e}", files.display()))?;
    }
    create_private_dir(&files)?;
    let volumes = gather_files(&volumes, &files, &rewrites)?;
    table.insert(
        "volumes".into(),
        toml::Value::Array(volumes.iter().map(|v| v.spec().into()).collect()),
    );
    table.insert("image".into(), archive.display().to_string().into());
    let out = dir.join(SMOLFILE);
    let _ = std::fs::remove_file(&out);
    write_new(
        &out,
        toml::to_string(&table)
            .map_err(|e| e.to_string())?
            .as_bytes(),
        0o600,
    )?;
    Ok(out)
}

/// Create and start the bottle's machine; on any failure, remove what was made and say why
/// in one line.
pub fn up(
    engine: &Engine,
    slug: &str,
    state: &Path,
    archive: &Path,
    hop_token: Option<&str>,
    bundle_address: Option<&str>,
) -> Result<(), String> {
    create_private_dir(&state.join(DIR))?;
    let made = (|| {
        let smolfile = prepare(state, archive, hop_token, bundle_address)?;
        let engine_state = engine_dir(state);
        create_private_dir(&engine_state)?;
        engine
            .machine(
                &engine_state,
                &[
                    "create".into(),
                    "--name".into(),
                    name(slug),
                    "--label".into(),
                    format!("{}={slug}", bottle_contract::labels::SLUG),
                    "--smolfile".into(),
                    smolfile.display().to_string(),
                ],
                Duration::from_secs(300),
            )
            .map_err(|e| format!("creating the agent's microVM: {e}"))?;
        engine
            .machine(
                &engine_state,
                &["start".into(), "--name".into(), name(slug)],
                Duration::from_secs(180),
            )
            .map_err(|e| explain_boot_failure(&e.message, &HostFacts::read()))
    })();
    if let Err(why) = made {
        return Err(match down(engine, slug, state) {
            Ok(_) => why,
            Err(e) => format!("{why}; removing what was made failed too: {e}"),
        });
    }
    Ok(())
}

/// The secrets the rendered Smolfile names (`[secrets] NAME = { from_env = "NAME" }`).
fn secrets(state: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(state.join(SMOLFILE)) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    table
        .get("secrets")
        .and_then(toml::Value::as_table)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.get("from_env")?.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// How the host runs `command` in the machine with its terminal attached.
pub fn exec_plan(
    engine: &Engine,
    slug: &str,
    state: &Path,
    command: &[String],
    workdir: Option<&str>,
    tty: bool,
    hop_token: Option<&str>,
) -> Result<ExecPlan, String> {
    let mut env = crate::engine::engine_env();
    let mut args = vec![
        "--error-format".into(),
        "json".into(),
        "machine".into(),
        "exec".into(),
        "--state-dir".into(),
        engine_dir(state).display().to_string(),
        "--name".into(),
        name(slug),
        "-i".into(),
    ];
    if tty {
        args.push("-t".into());
    }
    if let Some(w) = workdir {
        args.extend(["-w".into(), w.to_owned()]);
    }
    // Resolved on the host for this exec only; smolvm never writes the values down.
    for (guest, host) in secrets(state) {
        args.extend(["--secret-env".into(), format!("{guest}={host}")]);
    }
    // The proxy URLs with the hop token, the same way: egress, reachable by any local process
    // at the bundle's address, serves only requests that carry it.
    if let Some(token) = hop_token {
        for (guest, value) in authenticated_proxies(state, token) {
            let host = format!("BOTTLE_VM_{}", guest.to_uppercase());
            args.extend(["--secret-env".into(), format!("{guest}={host}")]);
            if !env.iter().any(|(k, _)| *k == host) {
                env.push((host, value));
            }
        }
    }
    args.push("--".into());
    args.extend(command.iter().cloned());
    Ok(ExecPlan {
        program: engine.program.display().to_string(),
        args,
        env,
    })
}

/// The machine's Smolfile's proxy variables (`HTTP_PROXY`, `https_proxy`, …: the copy `up`
/// made, with the bundle's address) with `token` as the password of their `http://` URL.
pub fn authenticated_proxies(state: &Path, token: &str) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(state.join(DIR).join(SMOLFILE)) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(env) = table.get("env").and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    bottle_contract::hop::proxy_env(
        env.iter()
            .filter_map(toml::Value::as_str)
            .filter_map(|kv| kv.split_once('=')),
        token,
    )
}

/// The machine's workload output.
pub fn logs(engine: &Engine, slug: &str, state: &Path) -> Result<String, String> {
    engine
        .machine(
            &engine_dir(state),
            &["logs".into(), "--name".into(), name(slug)],
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())
}

/// Stop and delete the machine, its output appended to the bottle's log, and remove
/// everything this driver kept; whether there was anything.
pub fn down(engine: &Engine, slug: &str, state: &Path) -> Result<bool, String> {
    let dir = state.join(DIR);
    if !dir.exists() {
        return Ok(false);
    }
    let engine_state = engine_dir(state);
    if engine_state.exists() {
        if let Ok(text) = logs(engine, slug, state)
            && !text.is_empty()
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(state.join(LOG_FILE))
        {
            // The agent's own output: made safe to print, as every part's lines are.
            let lines: String = text
                .lines()
                .map(|l| format!("agent-vm | {}\n", bottle_contract::terminal::safe(l)))
                .collect();
            let _ = f.write_all(lines.as_bytes());
        }
        let n = name(slug);
        // Not running is fine: a machine that never booted is only a record.
        let _ = engine.machine(
            &engine_state,
            &[
                "stop".into(),
                "--name".into(),
                n.clone(),
                "--timeout".into(),
                "2".into(),
            ],
            Duration::from_secs(60),
        );
        match engine.machine(
            &engine_state,
            &["delete".into(), "--name".into(), n.clone(), "-f".into()],
            Duration::from_secs(60),
        ) {
            Ok(_) => {}
            Err(e) if e.code == "NOT_FOUND" => {}
            Err(e) => return Err(format!("deleting machine {n}: {e}")),
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    Ok(true)
}

/// The machines of every bottle under `root`.
pub fn list(engine: &Engine, root: &Path) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let slug = entry.file_name().to_string_lossy().into_owned();
        let engine_state = engine_dir(&entry.path());
        if !engine_state.is_dir() {
            continue;
        }
        let json = engine
            .machine(
                &engine_state,
                &["ls".into(), "--json".into()],
                Duration::from_secs(30),
            )
            .map_err(|e| format!("listing machines in {}: {e}", engine_state.display()))?;
        let machines: Vec<serde_json::Value> =
            serde_json::from_str(&json).map_err(|e| format!("smolvm ls --json: {e}"))?;
        for m in machines {
            // The dir names the bottle; a label that says otherwise is not believed.
            if m["labels"][bottle_contract::labels::SLUG].as_str() != Some(slug.as_str()) {
                continue;
            }
            out.push(Listed {
                slug: slug.clone(),
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                state: m["state"].as_str().unwrap_or("unknown").to_owned(),
                created: m["created_at"].as_i64().unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| a.slug.cmp(&b.slug));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_get_the_hop_token_and_nothing_else_does() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(DIR)).unwrap();
        std::fs::write(
            d.path().join(DIR).join(SMOLFILE),
            "env = [\"HTTPS_PROXY=http://172.30.0.2:9099\", \"http_proxy=http://172.30.0.2:9099\", \"NO_PROXY=localhost\", \"EDITOR=vi\"]\n",
        )
        .unwrap();
        let got = authenticated_proxies(d.path(), "t0k");
        assert_eq!(
            got,
            [
                (
                    "HTTPS_PROXY".to_owned(),
                    "http://bottle:t0k@172.30.0.2:9099".to_owned()
                ),
                (
                    "http_proxy".to_owned(),
                    "http://bottle:t0k@172.30.0.2:9099".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn volumes_parse_with_and_without_a_mode() {
        assert_eq!(
            Volume::parse("/s/agent:/etc/bottle:ro").unwrap(),
            Volume {
                source: "/s/agent".into(),
                target: "/etc/bottle".into(),
                mode: Some("ro".into())
            }
        );
        assert_eq!(Volume::parse("/p:/workspace").unwrap().mode, None);
        assert!(Volume::parse("rel:/x").is_err());
        assert!(Volume::parse("/x").is_err());
    }

    #[test]
    fn file_mounts_are_gathered_per_dir_rewritten_and_system_dirs_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("proj")).unwrap();
        std::fs::write(src.join("gitconfig"), "[url \"git://git-gate/x.git\"]\n").unwrap();
        std::fs::write(src.join("mcp.json"), "{}").unwrap();
        let s = |p: &str| src.join(p).display().to_string();
        let vols = vec![
            Volume::parse(&format!("{}:/etc/bottle/gitconfig:ro", s("gitconfig"))).unwrap(),
            Volume::parse(&format!("{}:/etc/bottle/mcp.json:ro", s("mcp.json"))).unwrap(),
            Volume::parse(&format!("{}:/workspace", s("proj"))).unwrap(),
        ];
        let rw = vec![(
            "git://git-gate/".to_owned(),
            "git://127.0.0.1:20003/".to_owned(),
        )];
        let files = d.path().join("files");
        let out = gather_files(&vols, &files, &rw).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].target, "/workspace");
        assert_eq!(out[1].target, "/etc/bottle");
        assert_eq!(out[1].mode.as_deref(), Some("ro"));
        let copied = std::fs::read_to_string(files.join("etc-bottle/gitconfig")).unwrap();
        assert_eq!(copied, "[url \"git://127.0.0.1:20003/x.git\"]\n");
        let etc = vec![Volume::parse(&format!("{}:/etc/gitconfig:ro", s("gitconfig"))).unwrap()];
        let e = gather_files(&etc, &d.path().join("f2"), &rw).unwrap_err();
        assert!(e.contains("virtiofs mounts dirs only"), "{e}");
    }

    #[test]
    fn the_address_and_the_hop_token_take_the_placeholders_place_in_the_copies_only() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path();
        std::fs::create_dir_all(state.join("agent")).unwrap();
        std::fs::write(
            state.join("agent/gitconfig"),
            "[url \"git://git-gate/x.git\"]\n\tinsteadOf = git@h:x.git\n",
        )
        .unwrap();
        std::fs::write(
            state.join("agent/mcp.json"),
            format!(
                "{{\"url\": \"http://{BUNDLE_ADDRESS_PLACEHOLDER}:9100/\", \"headers\": {{\"Authorization\": \"Bearer {PLACEHOLDER}\"}}}}"
            ),
        )
        .unwrap();
        let a = state.join("agent").display().to_string();
        std::fs::write(
            state.join(SMOLFILE),
            format!(
                "env = [\"HTTPS_PROXY=http://{BUNDLE_ADDRESS_PLACEHOLDER}:9099\"]\nvolumes = [\"{a}/gitconfig:/etc/bottle/gitconfig:ro\", \"{a}/mcp.json:/etc/bottle/mcp.json:ro\"]\n\n[network]\nallow_cidrs = [\"{BUNDLE_ADDRESS_PLACEHOLDER}/32\"]\n"
            ),
        )
        .unwrap();
        let rewrites = serde_json::json!([
            [
                "git://git-gate/",
                format!("git://{BUNDLE_ADDRESS_PLACEHOLDER}/{PLACEHOLDER}/")
            ],
            ["://git-gate/", format!("://{BUNDLE_ADDRESS_PLACEHOLDER}/")]
        ]);
        std::fs::write(state.join(REWRITES), rewrites.to_string()).unwrap();
        let archive = state.join("agent-image.tar");
        let address = Some("172.30.0.2");

        // Without either, nothing is made: the VM could not reach the bundle, or git-gate
        // would refuse every path.
        let e = prepare(state, &archive, None, address).unwrap_err();
        assert!(e.contains("no hop token"), "{e}");
        let e = prepare(state, &archive, Some("c0ffee"), None).unwrap_err();
        assert!(e.contains("no address"), "{e}");
        let e = prepare(state, &archive, Some("c0ffee"), Some("1.2.3.4\"]")).unwrap_err();
        assert!(e.contains("no IPv4 address"), "{e}");

        let smolfile = prepare(state, &archive, Some("c0ffee"), address).unwrap();
        let files = state.join(DIR).join("files/etc-bottle");
        let gitconfig = std::fs::read_to_string(files.join("gitconfig")).unwrap();
        assert!(
            gitconfig.contains("git://172.30.0.2/c0ffee/x.git"),
            "{gitconfig}"
        );
        let mcp = std::fs::read_to_string(files.join("mcp.json")).unwrap();
        assert!(
            mcp.contains("http://172.30.0.2:9100/") && mcp.contains("Bearer c0ffee"),
            "{mcp}"
        );
        // The Smolfile smolvm reads: the address, never the token.
        let written: toml::Table = std::fs::read_to_string(&smolfile).unwrap().parse().unwrap();
        assert_eq!(
            written["network"]["allow_cidrs"][0].as_str(),
            Some("172.30.0.2/32")
        );
        assert!(!written.to_string().contains("c0ffee"), "{written}");
        assert_eq!(
            authenticated_proxies(state, "t"),
            [(
                "HTTPS_PROXY".to_owned(),
                "http://bottle:t@172.30.0.2:9099".to_owned()
            )]
        );
        // The staged originals keep their placeholders.
        let original = std::fs::read_to_string(state.join("agent/mcp.json")).unwrap();
        assert!(original.contains(PLACEHOLDER), "{original}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.join(DIR).join("files"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
