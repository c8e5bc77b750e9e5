//! The smolvm CLI: where it is, and one call of it with a deadline and its JSON error parsed.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The env var naming the smolvm binary (the wheel's `smol/smol-vmm`, or an installed `smolvm`).
pub const ENGINE_ENV: &str = "BOTTLE_SMOLVM";
/// The smolvm versions this driver was written and tested against.
pub const SUPPORTED: &str = ">=1.32.0, <2.0.0";

/// The smolvm binary and its version.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The binary.
    pub program: PathBuf,
    /// Its version.
    pub version: semver::Version,
}

/// A failed smolvm call: its stable code (`NOT_FOUND`, `SMOLVM_ERROR`, …) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    /// smolvm's `error.code`, or `EXIT` / `TIMEOUT` / `SPAWN` when it gave none.
    pub code: String,
    /// Its message.
    pub message: String,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "smolvm: {} ({})", self.message, self.code)
    }
}

impl Engine {
    /// `$BOTTLE_SMOLVM`, else `smolvm` or `smol-vmm` on `PATH`; its version must be
    /// [`SUPPORTED`].
    pub fn locate() -> Result<Engine, String> {
        let program = match std::env::var_os(ENGINE_ENV).filter(|v| !v.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_absolute() || !p.is_file() {
                    return Err(format!(
                        "{ENGINE_ENV}={}: name the smolvm binary by its absolute path",
                        p.display()
                    ));
                }
                p
            }
            None => on_path(&["smolvm", "smol-vmm"]).ok_or_else(|| {
                format!(
                    "smolvm is not installed: `pip install smolmachines==1.32.2` and set {ENGINE_ENV} to its smol/smol-vmm (or put smolvm on PATH)"
                )
            })?,
        };
        let out = run_raw(
            &program,
            &["--version".into()],
            &[],
            Duration::from_secs(20),
        )
        .map_err(|e| format!("{}: {e}", program.display()))?;
        let version = out
            .split_whitespace()
            .find_map(|w| semver::Version::parse(w).ok())
            .ok_or_else(|| {
                format!(
                    "{}: `--version` printed no version ({out:?})",
                    program.display()
                )
            })?;
        let req = semver::VersionReq::parse(SUPPORTED).expect("a valid requirement");
        if !req.matches(&version) {
            return Err(format!(
                "{} is smolvm {version}; this driver speaks smolvm {SUPPORTED}: install smolmachines==1.32.2",
                program.display()
            ));
        }
        Ok(Engine { program, version })
    }

    /// `smolvm --error-format json machine <args> --state-dir <state>`, its stdout on success.
    pub fn machine(
        &self,
        state: &Path,
        args: &[String],
        timeout: Duration,
    ) -> Result<String, EngineError> {
        let mut all = vec!["--error-format".to_owned(), "json".into(), "machine".into()];
        all.extend(args.iter().cloned());
        all.push("--state-dir".into());
        all.push(state.display().to_string());
        run_raw(&self.program, &all, &engine_env(), timeout)
    }
}

/// Env every smolvm call gets on top of the host's: no image-seed helper VM (bottle passes
/// local archives, which need none, and the helper boots at 4 vCPUs and 8 GiB).
pub fn engine_env() -> Vec<(String, String)> {
    vec![("SMOLVM_IMAGE_SEEDS".into(), "0".into())]
}

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// The most of a smolvm call's stdout or stderr kept. A machine's logs are the agent's own
/// output, as long as it likes: kept whole they could fill bottle's memory, and past the
/// driver ABI's answer limit they would fail the call, bundle logs and ledger seal with it.
/// An eighth of that limit: the answer's JSON writes a control byte as six (`\u0001`), so
/// even output made of nothing else fits.
const OUTPUT_MAX: u64 = (bottle_driver_sdk::MAX_ANSWER_BYTES / 8) as u64;

/// Run `program args` with `env` added, stdin closed, killed after `timeout`; stdout on exit 0
/// (at most [`OUTPUT_MAX`] bytes of it, then how many more there were), else the JSON error it
/// printed on stderr.
fn run_raw(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, EngineError> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError {
            code: "SPAWN".into(),
            message: format!("cannot run {}: {e}", program.display()),
        })?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = (&mut p).take(OUTPUT_MAX).read_to_end(&mut buf);
                // The rest is read and dropped: a child blocked on a full pipe never exits.
                let rest = std::io::copy(&mut p, &mut std::io::sink()).unwrap_or(0);
                if rest > 0 {
                    buf.extend_from_slice(format!("\n({rest} more bytes not kept)\n").as_bytes());
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            Err(_) => break None,
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(parse_error(&err).unwrap_or_else(|| EngineError {
            code: "EXIT".into(),
            message: format!("exit {}: {}", s.code().unwrap_or(-1), last_line(&err)),
        })),
        None => Err(EngineError {
            code: "TIMEOUT".into(),
            message: format!("no answer within {} s", timeout.as_secs()),
        }),
    }
}

/// The last line of `text` that is not smolvm's harmless `note: no packed assets` line.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.starts_with("note:") && !l.trim().is_empty())
        .unwrap_or("(no message)")
        .trim()
        .to_owned()
}

/// smolvm's `{"error":{"code":…,"message":…}}` line, if `stderr` holds one.
pub fn parse_error(stderr: &str) -> Option<EngineError> {
    stderr.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
        let e = v.get("error")?;
        Some(EngineError {
            code: e.get("code")?.as_str()?.to_owned(),
            message: e.get("message")?.as_str()?.to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_found_after_log_lines() {
        let stderr = "note: no packed assets found for 'smol-vmm'\n\u{1b}[2m…\u{1b}[0m WARN VMM exited\n{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"vm not found: x\"}}\n";
        assert_eq!(
            parse_error(stderr),
            Some(EngineError {
                code: "NOT_FOUND".into(),
                message: "vm not found: x".into()
            })
        );
        assert_eq!(parse_error("plain text\n"), None);
        assert_eq!(last_line("note: x\nreal one\n\n"), "real one");
    }

    #[test]
    fn output_past_the_cap_is_counted_not_kept_and_its_answer_fits_the_abi() {
        // Zero bytes: the output the answer's JSON makes longest (each `\u0000`).
        let over = OUTPUT_MAX + 1000;
        let out = run_raw(
            Path::new("/bin/sh"),
            &["-c".into(), format!("head -c {over} /dev/zero")],
            &[],
            Duration::from_secs(60),
        )
        .unwrap();
        let kept = usize::try_from(OUTPUT_MAX).unwrap();
        assert!(out[..kept].bytes().all(|b| b == 0));
        assert_eq!(&out[kept..], "\n(1000 more bytes not kept)\n");
        let answer = serde_json::json!({ "text": out }).to_string();
        assert!(
            answer.len() <= bottle_driver_sdk::MAX_ANSWER_BYTES,
            "{}",
            answer.len()
        );
    }
}
