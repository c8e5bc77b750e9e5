//! Attaching the user's terminal to the agent: a command run through exec, with a real TTY when
//! stdin is a terminal (raw mode, window size kept in sync, Ctrl-C passed through as a byte) and
//! plain pipes when it is not. The exec's exit code is the result.

use super::{DockerError, api};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptions;
use futures_util::StreamExt;
use std::io::IsTerminal;
use tokio::io::AsyncWriteExt;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// The container.
    pub container: String,
    /// The command, exec form.
    pub command: Vec<String>,
    /// Its working dir.
    pub workdir: Option<String>,
    /// Use a TTY (normally: stdin is a terminal).
    pub tty: bool,
    /// Env (`K=V`) for this command only, over the container's.
    pub env: Vec<String>,
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

async fn resize(docker: &Docker, exec_id: &str) {
    if let Some((h, w)) = window_size() {
        let _ = docker
            .resize_exec(
                exec_id,
                ResizeExecOptions {
                    h: i32::from(h),
                    w: i32::from(w),
                },
            )
            .await;
    }
}

/// Run `req` attached to this process's stdio; returns its exit code.
pub async fn exec(docker: &Docker, req: &ExecRequest) -> Result<i64, DockerError> {
    let created = docker
        .create_exec(
            &req.container,
            ExecConfig {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(req.tty),
                // Engines speaking API 1.42+ size the TTY before the command starts; older ones
                // only get the resize below, which can land after the command's first output.
                console_size: if req.tty {
                    window_size().map(|(h, w)| vec![usize::from(h), usize::from(w)])
                } else {
                    None
                },
                cmd: Some(req.command.clone()),
                env: (!req.env.is_empty()).then(|| req.env.clone()),
                working_dir: req.workdir.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(api(format!(
            "starting `{}` in {}",
            req.command.join(" "),
            req.container
        )))?;
    let exec_id = created.id;
    let raw = if req.tty {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let started = docker
        .start_exec(
            &exec_id,
            Some(StartExecOptions {
                detach: false,
                tty: req.tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(api(format!("attaching to {}", req.container)))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(DockerError::Host(
            "docker started the command detached".into(),
        ));
    };
    if req.tty {
        resize(docker, &exec_id).await;
    }

    let stdin_pump = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut input).await;
        // End of our stdin closes the command's stdin, so `cat`-like commands finish.
        let _ = input.shutdown().await;
    });
    let resizer = req.tty.then(|| {
        let docker = docker.clone();
        let id = exec_id.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                resize(&docker, &id).await;
            }
        })
    });

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(chunk) = output.next().await {
        let chunk = chunk.map_err(api(format!("reading from {}", req.container)))?;
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
    stdin_pump.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    drop(raw);
    let inspect = docker
        .inspect_exec(&exec_id)
        .await
        .map_err(api("reading the command's exit code"))?;
    Ok(inspect.exit_code.unwrap_or(-1))
}
