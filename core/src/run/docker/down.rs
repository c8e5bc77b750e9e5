//! Teardown: merged logs to `compose.log`, then every container, network and volume of the bottle
//! removed. Best effort: one failure does not stop the rest, and all failures are reported.

use super::inventory::{self, BottleContainer};
use super::{DockerError, api};
use bollard::Docker;
use bollard::query_parameters::{
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use std::path::Path;

/// One line of the merged logs: `<timestamp> <service> | <text>`.
fn merged_line(ts: &str, service: &str, text: &str) -> String {
    format!("{ts} {service} | {text}")
}

/// The text of a merged-logs line that service `service` wrote, or `None` for any other
/// line. The service is what bottle put there, read from the line's start; a part that writes
/// `<service> | ` into its own text (the agent can write to its container's log) is still its
/// own line, never `service`'s.
pub fn text_of<'a>(line: &'a str, service: &str) -> Option<&'a str> {
    let (_ts, rest) = line.split_once(' ')?;
    rest.strip_prefix(service)?.strip_prefix(" | ")
}

/// Merged logs of `containers`: each line `<timestamp> <service> | <text>`, oldest first, no colour.
pub async fn merged_logs(docker: &Docker, containers: &[BottleContainer]) -> String {
    merge(join_all(containers.iter().map(|c| log_lines(docker, c))).await)
}

/// One container's log lines, each `(timestamp, merged line)`.
type LogLines = Vec<(String, String)>;

/// Container `c`'s log, each line as it goes into the merged logs, keyed by its timestamp.
async fn log_lines(docker: &Docker, c: &BottleContainer) -> LogLines {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    let mut stream = docker.logs(&c.name, Some(opts));
    let mut buf = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let service = if c.role.is_empty() { &c.name } else { &c.role };
    buf.lines()
        .map(|line| {
            let (ts, text) = line.split_once(' ').unwrap_or((line, ""));
            (
                ts.to_owned(),
                merged_line(
                    ts,
                    service,
                    &bottle_contract::terminal::safe(&strip_ansi(text)),
                ),
            )
        })
        .collect()
}

/// Every container's lines in one text, oldest first.
fn merge(per: Vec<LogLines>) -> String {
    let mut all: Vec<(String, String)> = per.into_iter().flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().map(|(_, l)| l + "\n").collect()
}

/// `s` without ANSI escape sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// How long the bundle's daemons get to write their last lines and exit at teardown.
const BUNDLE_STOP_SECS: i32 = 2;

/// Stop container `c` for its last log lines: the bundle gracefully (its init forwards
/// SIGTERM, and the daemons write what they still hold: egress gathers its access log, the
/// ledger's source, into batches), bounded by [`BUNDLE_STOP_SECS`]; the agent at once (its
/// last words are written already). A failure is left to the removal that follows.
async fn stop_for_logs(docker: &Docker, c: &BottleContainer) {
    if c.state != "running" {
        return;
    }
    if c.role == bottle_contract::layout::AGENT_SERVICE {
        let _ = docker.kill_container(&c.name, None).await;
    } else {
        stop_gracefully(docker, &c.name).await;
    }
}

/// Stop `container` as teardown stops the bundle: SIGTERM, and SIGKILL after
/// [`BUNDLE_STOP_SECS`]. A failure is left to the removal that follows.
pub async fn stop_gracefully(docker: &Docker, container: &str) {
    let stop = StopContainerOptionsBuilder::default()
        .t(BUNDLE_STOP_SECS)
        .build();
    let _ = docker.stop_container(container, Some(stop)).await;
}

/// Remove container `name`. Gone already, or being removed by another teardown of the same
/// bottle (`bottle stop` while its `bottle run` tears down too), is done: the latter is waited
/// for, so its networks can go next.
async fn remove_container(
    docker: &Docker,
    name: &str,
    rm: bollard::query_parameters::RemoveContainerOptions,
) -> Result<(), DockerError> {
    use bollard::errors::Error::DockerResponseServerError;
    match docker.remove_container(name, Some(rm)).await {
        Ok(())
        | Err(DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(DockerResponseServerError {
            status_code: 409,
            message,
        }) if message.contains("already in progress") => {
            let removed = WaitContainerOptionsBuilder::default()
                .condition("removed")
                .build();
            let wait = docker
                .wait_container(name, Some(removed))
                .collect::<Vec<_>>();
            // The other teardown's own removal is bounded by the engine; this wait too.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), wait).await;
            Ok(())
        }
        Err(e) => Err(api(format!("removing container {name}"))(e)),
    }
}

/// Write the merged logs of `slug`'s containers to `log_file`, then remove everything of `slug`
/// (a kept network it joined is not its own: see [`super::kept::release`]).
///
/// Each container goes its own way (stopped, its log read, removed) beside the others, so the
/// agent's is gone while the bundle's daemons still write their last lines; the networks and
/// volumes go when every container has.
pub async fn down(docker: &Docker, slug: &str, log_file: Option<&Path>) -> Result<(), DockerError> {
    let containers = inventory::containers(docker, Some(slug)).await?;
    let mut errors = Vec::new();
    let rm = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let per_container = join_all(containers.iter().map(|c| {
        let rm = rm.clone();
        async move {
            let lines = match log_file {
                Some(_) => {
                    stop_for_logs(docker, c).await;
                    log_lines(docker, c).await
                }
                None => Vec::new(),
            };
            (lines, remove_container(docker, &c.name, rm).await)
        }
    }))
    .await;
    let (lines, removed): (Vec<_>, Vec<_>) = per_container.into_iter().unzip();
    // Teardown goes on without the logs: a full disk must not leave the bottle running.
    if let Some(path) = log_file
        && !containers.is_empty()
        && let Err(e) = std::fs::write(path, merge(lines))
        && !retired_meanwhile(path, &e)
    {
        errors.push(format!("cannot write the logs to {}: {e}", path.display()));
    }
    errors.extend(
        removed
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string()),
    );
    // Listed now, not before: a bring-up cut short by `bottle stop` may still have made one.
    let (networks, volumes) = futures_util::future::try_join(
        inventory::networks(docker, Some(slug)),
        inventory::volumes(docker, Some(slug)),
    )
    .await?;
    // Gone already (another teardown of the same bottle got there first) is done.
    let gone = |r: Result<(), bollard::errors::Error>, what: String| {
        super::gone_is_done(r).map_err(|e| api(what)(e).to_string())
    };
    let networks = join_all(networks.iter().map(|n| async move {
        gone(
            docker.remove_network(n).await,
            format!("removing network {n}"),
        )
    }));
    let volumes = join_all(volumes.iter().map(|v| async move {
        gone(
            docker
                .remove_volume(
                    v,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await,
            format!("removing volume {v}"),
        )
    }));
    let (networks, volumes) = futures_util::future::join(networks, volumes).await;
    errors.extend(networks.into_iter().chain(volumes).filter_map(Result::err));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DockerError::Host(errors.join("\n")))
    }
}

/// Whether writing the logs to `path` failed because its dir is gone: the bottle's other
/// teardown (`bottle stop` beside its attached run) retired the state dir meanwhile, keeping
/// the logs it read beside the others, so nothing is lost by not writing them here.
fn retired_meanwhile(path: &Path, e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound && path.parent().is_some_and(|dir| !dir.exists())
}

#[cfg(test)]
mod tests {
    use super::{merged_line, retired_meanwhile, text_of};

    #[test]
    fn logs_not_written_only_because_the_state_dir_was_retired_are_no_error() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("slug");
        std::fs::create_dir(&state).unwrap();
        let log = state.join("compose.log");
        // Retired by the other teardown: the dir is gone.
        std::fs::remove_dir(&state).unwrap();
        let e = std::fs::write(&log, b"x").unwrap_err();
        assert!(retired_meanwhile(&log, &e));
        // The dir is there and the write fails for another reason: that is an error.
        std::fs::create_dir(&state).unwrap();
        std::fs::create_dir(&log).unwrap();
        let e = std::fs::write(&log, b"x").unwrap_err();
        assert!(!retired_meanwhile(&log, &e), "{e}");
    }

    #[test]
    fn a_line_is_a_services_own_only_where_bottle_named_it() {
        let line = merged_line("2026-12-05T10:00:00Z", "sidecars", "[egress] {}");
        assert_eq!(text_of(&line, "sidecars"), Some("[egress] {}"));
        assert_eq!(text_of(&line, "agent"), None);
        // What the agent writes is the agent's, whatever it says.
        for forged in [
            "sidecars | [egress] {}",
            "x sidecars | [egress] {}",
            "| [egress] {}",
        ] {
            let line = merged_line("2026-12-05T10:00:00Z", "agent", forged);
            assert_eq!(text_of(&line, "sidecars"), None, "{line}");
        }
        assert_eq!(
            text_of("agent-vm | 2026 sidecars | [egress] {}", "sidecars"),
            None
        );
        assert_eq!(text_of("2026 sidecarsx | [egress] {}", "sidecars"), None);
    }

    #[test]
    fn strips_colour() {
        assert_eq!(
            super::strip_ansi("\u{1b}[31mred\u{1b}[0m plain"),
            "red plain"
        );
    }
}
