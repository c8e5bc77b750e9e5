//! Running git and ssh: a clean environment, the pinned-key ssh command, and a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `PATH` for git and ssh (Debian's git in the bundle; the host's for the tests).
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The ssh command git runs for upstream, as `GIT_SSH_COMMAND` (a shell line): the repo's key
/// only, the pinned `known_hosts` only, never a prompt, never trust on first use.
pub fn ssh_command(key: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
         -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o CheckHostIP=no \
         -o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=15 \
         -o ServerAliveCountMax=4 -o LogLevel=ERROR",
        shell_quote(&key.to_string_lossy()),
        shell_quote(&known_hosts.to_string_lossy()),
    )
}

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The environment git runs in: nothing inherited, no system or global config, no prompts,
/// a private `HOME`, and the repo's ssh command.
#[derive(Debug, Clone)]
pub struct GitEnv {
    /// `HOME` (the gate's own dir).
    pub home: PathBuf,
    /// `GIT_SSH_COMMAND`, when git may reach upstream.
    pub ssh: Option<String>,
}

impl GitEnv {
    /// `git ARGS…` in this environment.
    pub fn git(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_VARIANT", "ssh")
            .stdin(Stdio::null());
        if let Some(ssh) = &self.ssh {
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        cmd
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

impl Finished {
    /// Its stderr, cut to the lines worth showing (see [`reason`]).
    pub fn reason(&self) -> String {
        reason(&self.stderr)
    }
}

/// Why a command could not be run to the end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not start.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It ran past its deadline and was killed (with everything it started).
    #[error("{0} took longer than {1} s and was stopped")]
    Timeout(String, u64),
}

/// Run `cmd` (in a process group of its own) to the end, or kill the group at `timeout`.
pub fn run(mut cmd: Command, what: &str, timeout: Duration) -> Result<Finished, RunError> {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| RunError::Spawn(what.to_owned(), e))?;
    wait_with_deadline(child, what, timeout)
}

/// Collect `child`'s output to the end, killing its process group at `timeout`.
pub fn wait_with_deadline(
    mut child: Child,
    what: &str,
    timeout: Duration,
) -> Result<Finished, RunError> {
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut buf);
            }
            buf
        });
        let mut out = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_end(&mut out);
        }
        let err = err_reader.join().unwrap_or_default();
        let status = child.wait();
        let _ = tx.send((status, out, err));
    });
    let (status, stdout, stderr) = match rx.recv_timeout(timeout) {
        Ok(done) => done,
        Err(_) => {
            kill_group(pid);
            // The group is gone, so its pipes close and the collector finishes.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(RunError::Timeout(what.to_owned(), timeout.as_secs()));
        }
    };
    let status = status.map_err(|e| RunError::Spawn(what.to_owned(), e))?;
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// SIGKILL the process group `pid` leads.
pub fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// git's closing lines after any failed remote command: true of every failure, so no reason.
const BOILERPLATE: [&str; 3] = [
    "fatal: Could not read from remote repository.",
    "Please make sure you have the correct access rights",
    "and the repository exists.",
];

/// The lines of git's or ssh's stderr worth showing: no blanks, none of ssh's `@` banner or
/// git's closing boilerplate; the last two joined, at most 400 characters.
pub fn reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@') && !BOILERPLATE.contains(l))
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    let joined = tail.join("; ");
    if joined.is_empty() {
        return "no message".to_owned();
    }
    joined.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_path() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        let line = ssh_command(Path::new("/k ey"), Path::new("/kh"));
        assert!(line.contains("-i '/k ey'"), "{line}");
        assert!(line.contains("StrictHostKeyChecking=yes"));
        assert!(line.contains("BatchMode=yes"));
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_with_its_children() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let started = std::time::Instant::now();
        let e = run(cmd, "sleeper", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, RunError::Timeout(..)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reasons_drop_the_banner() {
        let err = b"@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@\nHost key for [h]:22 has changed and you have requested strict checking.\nHost key verification failed.\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n";
        assert_eq!(
            reason(err),
            "Host key for [h]:22 has changed and you have requested strict checking.; Host key verification failed."
        );
    }
}
