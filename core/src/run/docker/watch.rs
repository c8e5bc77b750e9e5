//! The sidecar bundle, watched while the agent works.
//!
//! The bundle is the agent's only way out, so its death is fail-closed by itself: the agent's
//! requests find nothing listening. What this adds is that the user hears of it at once and gets
//! it back. bottle follows the engine's events for the bundle's container (no polling); on an
//! exit nobody asked for, it says so on the terminal (the exit code, whether the kernel killed
//! it for memory, the daemons' last log lines), starts the same container again (its config,
//! mounts and secrets unchanged; routes applied live are in its mounted files), waits for the
//! ready check and points the agent's names at it again. At most [`MAX_RESTARTS`] within
//! [`RESTART_WINDOW`]: a bundle that keeps dying ends the run with [`BundleLost`].
//!
//! An exit `bottle stop` asked for (it leaves [`STOP_REQUESTED_FILE`] in the state dir first)
//! is not a death.
//!
//! Every death and restart is appended to the state dir's [`BUNDLE_EVENTS_FILE`], the host's
//! record the audit ledger reads.
//!
//! egress counts a grant's uses in memory, so before a restart the host ends every grant limited
//! by uses (re-planned without their routes, written for the bundle to read as it starts): a
//! restart never hands the agent those uses afresh.

use super::project::ComposeFile;
use super::{DockerError, api, names, up};
use bollard::Docker;
use bottle_contract::layout::{BUNDLE_EVENTS_FILE, STOP_REQUESTED_FILE};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How many times the bundle is started again within [`RESTART_WINDOW`] before the run ends.
pub const MAX_RESTARTS: usize = 3;
/// See [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The exit code of a run whose bundle could not be kept up (`EX_UNAVAILABLE`): a script tells
/// it from the agent's own failures.
pub const BUNDLE_LOST_EXIT: u8 = 69;
/// How many of the bundle's log lines a death shows.
const LAST_LINES: usize = 12;

/// The bundle could not be kept up; the run ends.
#[derive(Debug, thiserror::Error)]
#[error(
    "the sidecar bundle {container} died {deaths} times within {window}s and was not started again: {last}; the agent had no way out meanwhile. Its logs are in the run's kept log; if the kernel killed it for memory, raise `resources.bundle.memory` in the agent's manifest"
)]
pub struct BundleLost {
    /// The bundle's container.
    pub container: String,
    /// How many deaths within the window.
    pub deaths: usize,
    /// The window, in seconds.
    pub window: u64,
    /// The last death or failed start, in words.
    pub last: String,
}

/// One line of [`BUNDLE_EVENTS_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    /// When (RFC 3339).
    pub time: String,
    /// `died`, `restarted` or `lost`.
    pub event: String,
    /// The container's exit code, for a death.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Whether the kernel killed it for memory.
    #[serde(default)]
    pub oom: bool,
    /// What happened, in words.
    pub detail: String,
}

/// The bundle's events recorded in `state_dir`, oldest first.
pub fn recorded(state_dir: &Path) -> Vec<BundleEvent> {
    crate::state::read_lines(&state_dir.join(BUNDLE_EVENTS_FILE))
}

/// What [`watch`] looks after.
#[derive(Debug, Clone, Copy)]
pub struct Watched<'a> {
    /// The engine.
    pub docker: &'a Docker,
    /// The bottle's compose file (its bundle and agent services).
    pub file: &'a ComposeFile,
    /// The compose project.
    pub project: &'a str,
    /// The state dir (the agent's names, the event record).
    pub state_dir: &'a Path,
    /// How long a restarted bundle has to pass its ready check.
    pub health_timeout: Duration,
    /// The host env (a restart re-plans to end grants counted by uses).
    pub env: &'a crate::hostenv::HostEnv,
}

/// What happened to the bundle (a death, or its return), in words, with a death's exit code
/// and OOM flag.
struct Death {
    exit_code: Option<i64>,
    oom: bool,
    words: String,
}

/// Watch the bundle until dropped; returns only when it cannot be kept up.
pub async fn watch(w: Watched<'_>) -> Result<Infallible, BundleLost> {
    let Some((bundle_key, bundle)) = w.file.services.iter().find(|(k, s)| up::is_bundle(k, s))
    else {
        return std::future::pending().await;
    };
    let container = up::container_name(w.project, bundle_key, bundle);
    let lost = |deaths: usize, last: String| BundleLost {
        container: container.clone(),
        deaths,
        window: RESTART_WINDOW.as_secs(),
        last,
    };
    let mut deaths: VecDeque<Instant> = VecDeque::new();
    // Events from the moment the watch begins: a death before the stream is open is replayed,
    // and one before the watch began is found by the first look below. By name: a bundle
    // started again is another container of that name.
    let since = super::unix_now();
    let mut events = super::die_events(w.docker, &container, since);
    let mut look_now = true;
    loop {
        if !look_now {
            match events.next().await {
                Some(Ok(_)) => {}
                broken => {
                    // The engine went away or the stream ended: keep watching on a new one.
                    let why = broken.and_then(Result::err).map(|e| e.to_string());
                    tracing::warn!(
                        "the bundle's event stream ended ({}); opening it again",
                        why.as_deref().unwrap_or("closed")
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    events = super::die_events(w.docker, &container, since);
                    look_now = true;
                    continue;
                }
            }
        }
        look_now = false;
        // A death already dealt with (its container runs again) is not a new one.
        let Some(death) = death_of(w.docker, &container).await else {
            continue;
        };
        if w.state_dir.join(STOP_REQUESTED_FILE).exists() {
            // `bottle stop` is taking the bottle down: its exit was asked for.
            return std::future::pending().await;
        }
        let mut death = death;
        loop {
            let now = Instant::now();
            deaths.push_back(now);
            while deaths
                .front()
                .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
            {
                deaths.pop_front();
            }
            let logs = up::last_logs(w.docker, &container, LAST_LINES).await;
            record(w.state_dir, "died", &death);
            if deaths.len() > MAX_RESTARTS {
                record(w.state_dir, "lost", &death);
                say(&format!(
                    "the sidecar bundle {container} {}; its last log lines:\n{logs}",
                    death.words
                ));
                return Err(lost(deaths.len(), death.words));
            }
            say(&format!(
                "the sidecar bundle {container} {}; the agent has no way out until it is back. Its last log lines:\n{logs}starting it again ({} of {MAX_RESTARTS} within {}s)",
                death.words,
                deaths.len(),
                RESTART_WINDOW.as_secs()
            ));
            let began = Instant::now();
            match restart(&w, &container, bundle_key).await {
                Ok(()) => {
                    let back = Death {
                        exit_code: None,
                        oom: false,
                        words: format!(
                            "started again and ready in {} ms",
                            began.elapsed().as_millis()
                        ),
                    };
                    record(w.state_dir, "restarted", &back);
                    say(&format!(
                        "the sidecar bundle {container} is back ({} ms); the agent's way out is open again",
                        began.elapsed().as_millis()
                    ));
                    break;
                }
                Err(e) => {
                    // Said with the state it is left in, so the reason the run may end names
                    // the failed start, not only the first death.
                    let failed = format!("did not come back: {e}");
                    death = match death_of(w.docker, &container).await {
                        Some(d) => Death {
                            words: format!("{}; {failed}", d.words),
                            ..d
                        },
                        None => Death {
                            exit_code: None,
                            oom: false,
                            words: failed,
                        },
                    };
                }
            }
        }
    }
}

/// The bundle's death, if it is not running; `None` when it runs (or cannot be inspected: the
/// next event tells).
async fn death_of(docker: &Docker, container: &str) -> Option<Death> {
    let state = docker
        .inspect_container(container, None)
        .await
        .ok()?
        .state
        .unwrap_or_default();
    if state.running == Some(true) || state.restarting == Some(true) {
        return None;
    }
    let oom = state.oom_killed == Some(true);
    let code = state.exit_code;
    let mut words = format!(
        "exited with status {}",
        code.map_or_else(|| "?".to_owned(), |c| c.to_string())
    );
    if oom {
        words.push_str(", killed by the kernel for memory (OOM)");
    } else if code == Some(137) {
        words.push_str(" (killed)");
    }
    if let Some(err) = state.error.filter(|e| !e.is_empty()) {
        words.push_str(&format!(
            " ({})",
            bottle_contract::terminal::safe(err.trim())
        ));
    }
    Some(Death {
        exit_code: code,
        oom,
        words,
    })
}

/// End the grants counted by uses (a restarted egress would count afresh), start the bundle's
/// container again, wait for its ready check, and fill in the agent's names (its address may
/// have changed).
async fn restart(w: &Watched<'_>, container: &str, bundle_key: &str) -> Result<(), DockerError> {
    let (env, dir) = (w.env.clone(), w.state_dir.to_path_buf());
    let ended = tokio::task::spawn_blocking(move || {
        crate::live::apply::end_counted_grants(&env, &dir, SystemTime::now())
    })
    .await
    .map_err(|e| DockerError::Host(format!("ending the grants counted by uses: {e}")))?
    .map_err(|e| {
        DockerError::Host(format!(
            "the grants limited by uses could not be ended first ({e}), and a restarted egress would count their uses afresh"
        ))
    })?;
    if !ended.is_empty() {
        let what: Vec<String> = ended.iter().map(|a| a.describe()).collect();
        say(&format!(
            "ended with the restart (egress counts uses in memory): the grant{} for {}; the agent may ask again",
            if what.len() == 1 { "" } else { "s" },
            what.join(", ")
        ));
    }
    w.docker
        .start_container(container, None)
        .await
        .map_err(api(format!("starting {container} again")))?;
    if let Some(h) = &w.file.services[bundle_key].healthcheck {
        up::wait_healthy(w.docker, container, &h.test, w.health_timeout).await?;
    }
    // An agent on no network reaches the bundle at a fixed address of its own namespace
    // ([`super::handoff`]): its names stay as they were.
    if let Some((agent_key, agent)) = w
        .file
        .services
        .iter()
        .find(|(k, s)| up::is_agent(k, s) && !s.networks.is_empty())
    {
        let others: Vec<&str> = w
            .file
            .services
            .keys()
            .filter(|k| *k != agent_key)
            .map(String::as_str)
            .collect();
        names::fill(
            w.docker,
            w.file,
            w.project,
            w.state_dir,
            (agent_key, agent),
            &others,
            None,
        )
        .await?;
    }
    Ok(())
}

/// Append one event to the state dir's record; a failure is said, not fatal (the run goes on).
fn record(state_dir: &Path, event: &str, death: &Death) {
    let line = BundleEvent {
        time: crate::state::rfc3339(SystemTime::now()),
        event: event.to_owned(),
        exit_code: death.exit_code,
        oom: death.oom,
        detail: death.words.clone(),
    };
    let written = serde_json::to_string(&line)
        .map_err(std::io::Error::other)
        .and_then(|text| crate::state::append_line(&state_dir.join(BUNDLE_EVENTS_FILE), &text));
    if let Err(e) = written {
        say(&format!(
            "warning: the bundle's {event} was not recorded for the ledger: {e}"
        ));
    }
}

/// A line for the user's terminal, which may be in raw mode while the agent has it (where a
/// bare newline would not return the carriage).
fn say(text: &str) {
    use std::io::{IsTerminal as _, Write as _};
    let mut err = std::io::stderr();
    let text = format!("bottle: {text}\n");
    let text = if err.is_terminal() {
        text.replace('\n', "\r\n")
    } else {
        text
    };
    let _ = err.write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_recorded_one_per_line_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let died = Death {
            exit_code: Some(137),
            oom: true,
            words: "exited with status 137, killed by the kernel for memory (OOM)".into(),
        };
        record(t.path(), "died", &died);
        record(
            t.path(),
            "restarted",
            &Death {
                exit_code: None,
                oom: false,
                words: "started again and ready in 900 ms".into(),
            },
        );
        let got = recorded(t.path());
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].event.as_str(), got[0].exit_code, got[0].oom),
            ("died", Some(137), true)
        );
        assert_eq!(
            (got[1].event.as_str(), got[1].exit_code),
            ("restarted", None)
        );
    }

    #[test]
    fn the_lost_message_says_what_happened_and_what_to_do() {
        let e = BundleLost {
            container: "bottle-sidecars-x".into(),
            deaths: 4,
            window: 60,
            last: "exited with status 1".into(),
        }
        .to_string();
        assert!(e.contains("died 4 times within 60s"), "{e}");
        assert!(e.contains("resources.bundle.memory"), "{e}");
    }
}
