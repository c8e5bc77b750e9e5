//! Attaching the user's terminal to the agent: its command is the agent container's own
//! process, waiting for a go-ahead ([`StartFiles`]) that is given once the terminal is attached,
//! with a real TTY when stdin is a terminal (raw mode, window size kept in sync, Ctrl-C passed
//! through as a byte) and plain pipes when it is not. The container's exit code is the result.

use super::{DockerError, api};
use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ResizeContainerTTYOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The agent's command, run as its container's own process: [`super::up::AgentStart`] made it
/// wait for the go-ahead, which [`run`] gives once attached.
#[derive(Clone)]
pub struct AgentSession {
    /// The agent container.
    pub container: String,
    /// Whether the container has a TTY (normally: stdin is a terminal).
    pub tty: bool,
    /// The go-ahead FIFO on the host ([`StartFiles::go`]).
    pub go: PathBuf,
    /// What the command gets on top of the container's env, never in its config.
    pub env: Vec<(String, String)>,
    /// How long the container's process may take to be waiting for the go-ahead.
    pub timeout: Duration,
}

impl std::fmt::Debug for AgentSession {
    // The env carries the hop token: its names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSession")
            .field("container", &self.container)
            .field("tty", &self.tty)
            .field("go", &self.go)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The files on the host that make the agent's container wait for its go-ahead.
#[derive(Debug, Clone)]
pub struct StartFiles {
    /// `bottle-init`, whose `agent` mode waits and then becomes the command.
    pub init: PathBuf,
    /// The dir holding the FIFO, mounted read-only at [`GO_DIR_IN_AGENT`].
    pub go_dir: PathBuf,
    /// The FIFO itself.
    pub go: PathBuf,
}

/// Where [`StartFiles::init`] is mounted in the agent (read-only).
pub const INIT_IN_AGENT: &str = "/.bottle/start";
/// Where [`StartFiles::go_dir`] is mounted in the agent (read-only).
pub const GO_DIR_IN_AGENT: &str = "/.bottle/go";
/// The FIFO's name in [`StartFiles::go_dir`].
const GO_FIFO: &str = "go";

/// What to do when bottle's start could not run in the agent's image, or `""` when that is
/// not the likely reason: a start linked against this machine's glibc needs one as new in the
/// image.
pub fn start_hint() -> String {
    if super::images::BUNDLE_BINARIES_STATIC {
        return String::new();
    }
    format!(
        "; bottle's start ({INIT_IN_AGENT}) is linked against this machine's glibc, since bottle was built without the musl target, and may not run in this image: `rustup target add {}-unknown-linux-musl`, install musl-tools, and build bottle again",
        std::env::consts::ARCH
    )
}

impl StartFiles {
    /// Write `bottle-init` and a fresh FIFO into `state_dir`. The FIFO is readable by every
    /// user of the container (the agent's may be any uid; the state dir above it is the host
    /// user's alone). An agent running as your uid owns it and could open it to write too: it
    /// is removed as soon as the go-ahead is written, so nothing reads it after that.
    pub fn install(state_dir: &Path) -> Result<StartFiles, DockerError> {
        use std::os::unix::fs::PermissionsExt;
        let files = StartFiles {
            init: super::images::install_program(
                state_dir,
                "bottle-init",
                super::images::INIT_BINARY,
            )?,
            go_dir: state_dir.join("go"),
            go: state_dir.join("go").join(GO_FIFO),
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&files.go_dir)?;
            std::fs::set_permissions(&files.go_dir, std::fs::Permissions::from_mode(0o755))?;
            match std::fs::remove_file(&files.go) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &files.go,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )?;
            // The umask may have taken bits the container's user needs.
            std::fs::set_permissions(&files.go, std::fs::Permissions::from_mode(0o644))
        };
        write().map_err(|e| {
            DockerError::Host(format!(
                "cannot make the agent's go-ahead FIFO {}: {e}; check the state dir's permissions",
                files.go.display()
            ))
        })?;
        Ok(files)
    }

    /// The container's entrypoint: hand the bundle its listeners (`init_args`, see
    /// [`super::handoff`]), wait for the go-ahead, then become `command`.
    pub fn entrypoint(init_args: Option<&[String]>, command: &[String]) -> Vec<String> {
        let mut e = vec![
            INIT_IN_AGENT.to_owned(),
            "agent".to_owned(),
            format!("{GO_DIR_IN_AGENT}/{GO_FIFO}"),
        ];
        e.extend_from_slice(init_args.unwrap_or_default());
        e.push("--".to_owned());
        e.extend_from_slice(command);
        e
    }
}

/// Whether this process's stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Puts the terminal in raw mode and restores it when dropped, even on error.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<Self, DockerError> {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin)
            .map_err(|e| DockerError::Host(format!("cannot read the terminal's mode: {e}")))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw)
            .map_err(|e| DockerError::Host(format!("cannot put the terminal in raw mode: {e}")))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn window_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(rustix::stdio::stdin()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

async fn resize(docker: &Docker, container: &str) {
    if let Some((h, w)) = window_size() {
        let _ = docker
            .resize_container_tty(
                container,
                ResizeContainerTTYOptions {
                    h: i32::from(h),
                    w: i32::from(w),
                },
            )
            .await;
    }
}

/// How often the host looks again for the container's process waiting on the FIFO.
const GO_RETRY: Duration = Duration::from_millis(2);

/// Give the go-ahead: open the FIFO once the container's process waits on it (an open with
/// no reader fails at once: the host never blocks on a process that died) and write `message`.
async fn go(docker: &Docker, s: &AgentSession, message: Vec<u8>) -> Result<(), DockerError> {
    use rustix::fs::{Mode, OFlags};
    let deadline = tokio::time::Instant::now() + s.timeout;
    let mut next_look = tokio::time::Instant::now();
    let fd = loop {
        match rustix::fs::open(
            &s.go,
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(rustix::io::Errno::NXIO) => {}
            Err(e) => {
                return Err(DockerError::Host(format!(
                    "cannot open the agent's go-ahead {}: {e}; bottle made it in the run's state dir, which must stay as bottle wrote it until the run ends",
                    s.go.display()
                )));
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(DockerError::Host(format!(
                "the agent container {} did not wait for its command within {}s: its process never opened the go-ahead FIFO, which needs an engine on this machine's kernel (a local Linux engine, not one in a VM or on another host); `docker top {}` shows what runs in it",
                s.container,
                s.timeout.as_secs(),
                s.container
            )));
        }
        if now >= next_look {
            // A process that died will never read: said at once, not at the deadline.
            next_look = now + Duration::from_millis(200);
            let state = docker
                .inspect_container(&s.container, None)
                .await
                .map_err(api(format!("inspecting {}", s.container)))?
                .state;
            if !state.as_ref().and_then(|s| s.running).unwrap_or(false) {
                let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
                return Err(DockerError::Host(format!(
                    "the agent container {} exited (code {code}) before its command could start{}",
                    s.container,
                    start_hint()
                )));
            }
        }
        tokio::time::sleep(GO_RETRY).await;
    };
    let written = tokio::task::spawn_blocking(move || {
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        std::fs::File::from(fd).write_all(&message)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    // Read once: gone, nobody opens it again.
    let _ = std::fs::remove_file(&s.go);
    written.map_err(|e| {
        DockerError::Host(format!(
            "cannot give the agent container {} its go-ahead: {e}; its process stopped reading (`docker top {}` shows what runs in it)",
            s.container, s.container
        ))
    })
}

/// How the agent's output ended, for [`exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEnd {
    /// The output closed: the engine keeps an attach open while the container's process
    /// runs, so its process ended, and the engine says so soon (however busy it is).
    Closed,
    /// The user typed the engine's detach keys at the terminal: the command still runs.
    Detached,
}

/// Docker's default detach keys (ctrl-p ctrl-q): on a TTY the engine ends the attach when it
/// reads them on stdin, and the command runs on. bottle sets no others.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Attach to the agent's container, give its command the go-ahead and relay its stdio until
/// its output ends; [`exit_code`] tells how the command ended.
pub async fn run(docker: &Docker, s: &AgentSession) -> Result<OutputEnd, DockerError> {
    let options = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let AttachContainerResults {
        mut output,
        mut input,
    } = docker
        .attach_container(&s.container, Some(options))
        .await
        .map_err(api(format!("attaching to {}", s.container)))?;
    let raw = if s.tty {
        // Sized before the command starts: its first screen fits.
        resize(docker, &s.container).await;
        Some(RawMode::enter()?)
    } else {
        None
    };
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stdin_pump = tokio::spawn({
        let detached = detached.clone();
        let tty = s.tty;
        async move {
            use tokio::io::AsyncReadExt as _;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            let mut last = 0u8;
            loop {
                let n = match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if tty && typed_detach_keys(last, &buf[..n]) {
                    detached.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                last = buf[n - 1];
                // Flushed at once: a keystroke must not wait in a buffer for the next one.
                if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            // End of our stdin closes the command's stdin, so `cat`-like commands finish.
            let _ = input.shutdown().await;
        }
    });
    let resizer = s.tty.then(|| {
        let docker = docker.clone();
        let container = s.container.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                resize(&docker, &container).await;
            }
        })
    });
    let relayed = async {
        go(docker, s, bottle_contract::go::encode(&s.env)).await?;
        let mut stdout = tokio::io::stdout();
        let mut stderr = tokio::io::stderr();
        while let Some(chunk) = output.next().await {
            let chunk = chunk.map_err(api(format!("reading from {}", s.container)))?;
            match chunk {
                LogOutput::StdErr { message } => {
                    let _ = stderr.write_all(&message).await;
                    let _ = stderr.flush().await;
                }
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    let _ = stdout.write_all(&message).await;
                    let _ = stdout.flush().await;
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok::<_, DockerError>(())
    }
    .await;
    stdin_pump.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    drop(raw);
    relayed.map(|()| {
        if detached.load(std::sync::atomic::Ordering::Relaxed) {
            OutputEnd::Detached
        } else {
            OutputEnd::Closed
        }
    })
}

/// Whether `chunk`, read after the byte `last`, holds [`DETACH_KEYS`].
fn typed_detach_keys(last: u8, chunk: &[u8]) -> bool {
    let [first, second] = DETACH_KEYS;
    (last == first && chunk.first() == Some(&second)) || chunk.windows(2).any(|w| w == DETACH_KEYS)
}

/// Resolves when the engine says the agent's `container` died (its process ended), which is
/// before its output stream ends: the engine releases the container's network first. Watched
/// by the container's id: a container of an earlier run of the same slug that died in the
/// same second is not this one. A failing event stream never resolves: the output's end says
/// it then.
pub async fn died(docker: &Docker, container: &str, since: u64) {
    let id = match docker.inspect_container(container, None).await {
        Ok(c) => c.id,
        Err(_) => None,
    };
    let Some(id) = id else {
        return std::future::pending().await;
    };
    match super::die_events(docker, &id, since).next().await {
        Some(Ok(_)) => {}
        _ => std::future::pending().await,
    }
}

/// How long the container may take to stop once its output ended before bottle ends it (the
/// user detached: the command runs on) or says that it waits (the output closed).
const EXIT_SOON: Duration = Duration::from_secs(5);

/// How long the container may take to stop once its output closed: its process ended, but an
/// engine stopping many containers at once may say so only seconds later (30 at once on 2
/// cores: over 5 s). Past it, the container is taken for stuck and ended with the bottle.
const CLOSED_EXIT_WAIT: Duration = Duration::from_secs(60);

/// The exit code of the agent's container once it stopped; `-1` if it still runs after the
/// wait its output's `end` allows ([`EXIT_SOON`], [`CLOSED_EXIT_WAIT`]).
pub async fn exit_code(
    docker: &Docker,
    container: &str,
    end: OutputEnd,
) -> Result<i64, DockerError> {
    let mut stopped = docker.wait_container(container, Some(WaitContainerOptions::default()));
    let mut waited = tokio::time::timeout(EXIT_SOON, stopped.next()).await;
    if waited.is_err() && end == OutputEnd::Closed {
        eprintln!(
            "bottle: the agent's output ended; waiting up to {} s for its command to end",
            CLOSED_EXIT_WAIT.as_secs()
        );
        waited = tokio::time::timeout(CLOSED_EXIT_WAIT - EXIT_SOON, stopped.next()).await;
    }
    match waited {
        Err(_) => {
            let why = match end {
                OutputEnd::Detached => "you detached",
                OutputEnd::Closed => "it closed its output",
            };
            eprintln!(
                "bottle: the agent's command still runs after its output ended ({why}); it is ended with the bottle"
            );
            Ok(-1)
        }
        Ok(Some(Ok(r))) => Ok(r.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(code),
        Ok(Some(Err(e))) => Err(api(format!("reading the exit code of {container}"))(e)),
        Ok(None) => Ok(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::{StartFiles, typed_detach_keys};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn the_detach_keys_are_seen_in_one_read_or_across_two() {
        assert!(typed_detach_keys(0, b"ls\x10\x11"));
        assert!(typed_detach_keys(0x10, b"\x11"));
        assert!(!typed_detach_keys(0, b"\x11\x10"));
        assert!(!typed_detach_keys(0x10, b"x\x11"));
        assert!(!typed_detach_keys(b'a', b"plain text\n"));
        assert!(!typed_detach_keys(0x10, b""));
    }

    #[test]
    fn the_start_files_are_a_fifo_the_agent_reads_and_an_init_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        // What a run before left (a kept state dir) is replaced, not reused.
        std::fs::create_dir_all(dir.path().join("go")).unwrap();
        std::fs::write(dir.path().join("go/go"), "stale").unwrap();
        let files = StartFiles::install(dir.path()).unwrap();
        let meta = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap();
        assert!(meta(&files.go).file_type().is_fifo());
        assert_eq!(meta(&files.go).permissions().mode() & 0o777, 0o644);
        assert_eq!(meta(&files.go_dir).permissions().mode() & 0o777, 0o755);
        assert_eq!(meta(&files.init).permissions().mode() & 0o777, 0o755);
        assert_eq!(
            std::fs::read(&files.init).unwrap(),
            crate::run::docker::images::INIT_BINARY
        );
        assert_eq!(
            StartFiles::entrypoint(None, &["claude".into(), "-p".into()]),
            [
                "/.bottle/start",
                "agent",
                "/.bottle/go/go",
                "--",
                "claude",
                "-p"
            ]
        );
    }
}
