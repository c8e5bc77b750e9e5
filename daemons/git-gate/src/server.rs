//! The git daemon: accept, read the request, bring the mirror up to date, then hand the
//! connection to git's own `upload-pack` or `receive-pack`.

use crate::config::Config;
use crate::gitcmd::{GitEnv, ssh_command};
use crate::hook::{CONTEXT_ENV, HookContext, HookReport};
use crate::log::Record;
use crate::mirror::{self, Mirrors};
use crate::pkt::{self, Pkt, PktError};
use crate::request::{self, Request, Service};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The longest first request line accepted (git's are under 200 bytes).
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle once git runs.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// What the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `gate.yaml`.
    pub config: PathBuf,
    /// The dir of the `pre-receive` hook.
    pub hooks: PathBuf,
    /// Mirrors, home and hook reports; a fresh private temp dir when none.
    pub state: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// The hop token every request path must start with, when the gate's port is published
    /// beyond the bottle ([`bottle_contract::hop`]).
    pub hop: Option<bottle_contract::hop::HopToken>,
}

/// The daemon's state, shared by every connection.
#[derive(Debug)]
pub struct Gate {
    config_path: PathBuf,
    config: RwLock<Arc<Config>>,
    mirrors: Mirrors,
    hooks: PathBuf,
    home: PathBuf,
    reports: PathBuf,
    active: AtomicUsize,
    served: AtomicU64,
    max_connections: usize,
    hop: Option<bottle_contract::hop::HopToken>,
}

/// Why the gate cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `gate.yaml` is not servable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No hook, so no push could be checked.
    #[error(
        "the pre-receive hook {0} is missing or not executable; git-gate will not accept pushes it cannot check (reinstall the bundle image, or give --hooks)"
    )]
    Hook(PathBuf),
    /// The state dir cannot be made.
    #[error("cannot create the state dir {0}: {1}")]
    State(PathBuf, io::Error),
}

impl Gate {
    /// Load and check everything; nothing listens yet.
    pub fn new(settings: Settings) -> Result<Gate, StartError> {
        let config = Config::load(&settings.config)?;
        let hook = settings.hooks.join("pre-receive");
        let executable = std::fs::metadata(&hook)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            return Err(StartError::Hook(hook));
        }
        let state = match settings.state {
            Some(s) => s,
            None => std::env::temp_dir().join(format!(
                "bottle-git-gate-{}-{}",
                std::process::id(),
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            )),
        };
        let made = |p: PathBuf| -> Result<PathBuf, StartError> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .and_then(|()| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)))
                .map_err(|e| StartError::State(p.clone(), e))?;
            Ok(p)
        };
        let state = made(state)?;
        let mirrors = Mirrors::new(state.join("mirrors"))
            .map_err(|e| StartError::State(state.join("mirrors"), e))?;
        Ok(Gate {
            config_path: settings.config,
            config: RwLock::new(Arc::new(config)),
            mirrors,
            hooks: settings.hooks,
            home: made(state.join("home"))?,
            reports: made(state.join("reports"))?,
            active: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            max_connections: settings.max_connections.max(1),
            hop: settings.hop,
        })
    }

    /// The config now served.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read `gate.yaml`; on any problem the old config stays and the error is returned.
    /// New repos are mirrored on first use; removed ones are refused from now on.
    pub fn reload(&self) -> Result<Arc<Config>, crate::config::ConfigError> {
        let config = Arc::new(Config::load(&self.config_path)?);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config.clone();
        Ok(config)
    }

    /// Serve `listener` until the process ends: one thread per connection.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            let Ok(stream) = stream else {
                // Mostly out of descriptors: the same call fails at once until one closes.
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            };
            let gate = self.clone();
            let _ = std::thread::Builder::new()
                .name("git-gate-conn".into())
                .spawn(move || gate.connection(stream));
        }
    }

    fn connection(&self, mut stream: TcpStream) {
        let started = Instant::now();
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        let mut record = Record::new("refuse");
        record.peer = peer;
        if active > self.max_connections {
            record.outcome = "refused";
            record.reason = format!("busy: {active} connections");
            let _ = pkt::write_err(&mut stream, "git-gate is busy; try again in a moment");
        } else if let Err(reason) = self.serve_one(&mut stream, &mut record, started) {
            if record.outcome == "ok" {
                record.outcome = "refused";
            }
            record.reason = reason;
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Both);
        if record.op == "refuse" && record.reason.is_empty() {
            return; // a bare connect (the ready check): nothing to log
        }
        record.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        record.emit();
    }

    /// One connection; `Err` is the reason it was refused (already sent as `ERR`).
    fn serve_one(
        &self,
        stream: &mut TcpStream,
        record: &mut Record,
        arrival: Instant,
    ) -> Result<(), String> {
        let refuse = |stream: &mut TcpStream, msg: String| {
            let _ = pkt::write_err(stream, &msg);
            Err(msg)
        };
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let req: Request = match pkt::read(stream, MAX_REQUEST) {
            Ok(Pkt::Data(data)) => match request::parse(&data, self.hop.as_ref()) {
                Ok(r) => r,
                Err(e) => return refuse(stream, e.to_string()),
            },
            Ok(_) => {
                return refuse(
                    stream,
                    "malformed request: expected a git daemon request".into(),
                );
            }
            Err(PktError::Closed) => return Ok(()),
            Err(e) => return refuse(stream, e.to_string()),
        };
        record.op = req.service.op();
        record.repo = req.repo.clone();
        record.protocol = req.version;
        let config = self.config();
        let Some(repo) = config.repo(&req.repo).cloned() else {
            return refuse(
                stream,
                format!(
                    "`{}` is not a repo this bottle serves (it serves: {}); use git://git-gate/<name>.git",
                    req.repo,
                    config.names().join(", ")
                ),
            );
        };
        let env = GitEnv {
            home: self.home.clone(),
            ssh: Some(ssh_command(
                Path::new(&repo.key),
                Path::new(&config.file.known_hosts),
            )),
        };
        let slot = self.mirrors.slot(&repo.name);
        let mut held = mirror::lock(&slot);
        let dir = self.mirrors.dir(&repo.name);
        let coalesce = Duration::from_millis(config.file.fetch_coalesce_ms);
        match mirror::sync(&dir, &mut held, &repo, &env, arrival, coalesce) {
            Ok(s) => record.upstream = Some(s),
            Err(reason) => {
                record.outcome = "error";
                return refuse(
                    stream,
                    format!(
                        "{reason} (git-gate serves nothing it could not check against upstream)"
                    ),
                );
            }
        }
        let mut git = env.git();
        if let Some(v) = req.version {
            git.env("GIT_PROTOCOL", format!("version={v}"));
        }
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        match req.service {
            Service::UploadPack => {
                drop(held);
                git.args(["upload-pack", "--strict", "--timeout=600"])
                    .arg(&dir);
                let (status, err) = splice(git, stream, None)?;
                if !status.success() {
                    record.outcome = "error";
                    return Err(format!("upload-pack: {}", crate::gitcmd::reason(&err)));
                }
                Ok(())
            }
            Service::ReceivePack => {
                let n = self.served.fetch_add(1, Ordering::SeqCst);
                let report = self.reports.join(format!("{n}.json"));
                let _ = std::fs::remove_file(&report);
                let ctx = HookContext {
                    repo: repo.clone(),
                    scan: config.file.scan.clone(),
                    report: report.clone(),
                };
                let ctx = serde_json::to_string(&ctx).map_err(|e| e.to_string())?;
                // No receive.deny* here: every refusal is the hook's, with a message that says
                // what to do, and a log line that says why.
                git.env(CONTEXT_ENV, ctx)
                    .arg("-c")
                    .arg(format!("core.hooksPath={}", self.hooks.display()))
                    .args(["-c", "receive.fsckObjects=true"])
                    .args(["-c", "receive.advertisePushOptions=false"])
                    .args([
                        "-c",
                        &format!("receive.maxInputSize={}", config.file.scan.max_push_bytes),
                    ])
                    .args(["-c", "receive.autogc=false", "-c", "gc.auto=0"])
                    .args(["-c", "core.logAllRefUpdates=false"])
                    .arg("receive-pack")
                    .arg(&dir);
                let spliced = splice(git, stream, Some(RECEIVE_DATA_LIMIT));
                drop(held);
                let hook: Option<HookReport> = std::fs::read(&report)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let _ = std::fs::remove_file(&report);
                let (status, err) = spliced?;
                match &hook {
                    Some(h) if h.outcome != "accepted" => {
                        record.outcome = "refused";
                        record.reason = h.reason.clone();
                    }
                    Some(_) if !status.success() => {
                        record.outcome = "error";
                        record.reason = crate::gitcmd::reason(&err);
                    }
                    Some(_) => {}
                    // The hook never ran: nothing to update, or a pack receive-pack refused.
                    None if err.is_empty() && status.success() => {
                        record.reason = "nothing to update".into();
                    }
                    None => {
                        record.outcome = "refused";
                        record.reason = crate::gitcmd::reason(&err);
                    }
                }
                record.push = hook;
                Ok(())
            }
        }
    }
}

/// How much memory a push's git may allocate (`RLIMIT_DATA`, which read-only maps of packs do
/// not count): a pack of a few kilobytes whose deltas inflate to gigabytes (a delta bomb)
/// fails in git's allocation, and the push is refused, long before the bundle runs out.
pub const RECEIVE_DATA_LIMIT: u64 = 1 << 30;

/// Run `git` with the connection as its stdin and stdout until it exits; its stderr is kept
/// for the log. `data_limit` caps what it (and what it runs) may allocate.
fn splice(
    mut git: Command,
    stream: &mut TcpStream,
    data_limit: Option<u64>,
) -> Result<(ExitStatus, Vec<u8>), String> {
    git.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = git.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    if let Some(limit) = data_limit {
        // Before it reads a byte of the pack (it advertises its refs first), so the
        // index-pack it starts for the pack inherits the limit.
        let pid = rustix::process::Pid::from_child(&child);
        let cap = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        if let Err(e) = rustix::process::prlimit(Some(pid), rustix::process::Resource::Data, cap) {
            let _ = child.kill();
            return Err(format!("cannot bound git's memory: {e}"));
        }
        // Several pushes at once could still fill the bundle's memory limit together: the
        // kernel then kills a push's git (and the index-pack it starts, which inherits this),
        // never egress or PID 1. Raising it needs no privilege; where /proc is not writable
        // the data limit above still holds each push.
        let _ = std::fs::write(format!("/proc/{}/oom_score_adj", child.id()), "1000");
    }
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut from_client = stream
        .try_clone()
        .map_err(|e| format!("cannot serve the connection: {e}"))?;
    let inbound = std::thread::spawn(move || {
        let _ = pump(&mut from_client, &mut stdin);
    });
    let errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
        let _ = io::copy(&mut stderr, &mut io::sink());
        buf
    });
    let _ = pump(&mut stdout, stream);
    // If the client went away mid-stream, git must not block writing to a pipe nobody reads.
    drop(stdout);
    let status = child.wait().map_err(|e| e.to_string())?;
    // git is done: end the inbound copy too.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = inbound.join();
    let err = errors.join().unwrap_or_default();
    Ok((status, err))
}

/// Copy until EOF with plain reads and writes: `io::copy` between a socket and a pipe uses
/// splice(2) on Linux, which here held back a v2 client's second command until more came.
fn pump(from: &mut impl Read, to: &mut impl io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}

/// Bind `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}
