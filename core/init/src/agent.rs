//! `bottle-init agent GO [--listen LISTENERS] -- COMMAND…`: the agent container's own process
//! on Docker.
//!
//! The agent's command is the container's main process (no `docker exec`: an exec costs the
//! engine a runc start of its own, and its container a kill at teardown), but it must not run
//! before the bundle is ready, its names are filled in and the escape suite has looked. So
//! this waits on the FIFO `GO`, which the host opens only then, and reads what the command gets
//! on top of the container's env (`K=V` entries, each ended by a NUL: the proxy URLs carrying
//! the hop token, which never sit in the container's config or on disk). At the writer's end
//! it replaces itself with `COMMAND` (looked up on `PATH`, as `docker exec` does).
//!
//! With `--listen`, the agent is on no network: first it binds the bundle's ports in its own
//! namespace and starts a keeper that hands them to the bundle ([`crate::handoff`]).
//!
//! The host closing `GO` without a word (it gave up on the run) ends this with exit 1 and the
//! command never runs.

use bottle_contract::handoff::Listener;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

/// The most the host sends: an env, not a file.
const MAX_ENV_BYTES: u64 = 1 << 20;

/// Exit code when the command cannot be found (as a shell and `docker exec` say).
const NOT_FOUND: i32 = 127;
/// Exit code when the command was found but cannot run.
const CANNOT_RUN: i32 = 126;

/// Bind `listeners` for the bundle, for a keeper to hand over ([`crate::handoff::keep`]),
/// wait on `go`, then become
/// `command`; returns only on failure, with the exit code.
pub fn run(go: &Path, listeners: &[Listener], command: &[String]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("bottle-init agent: no command given");
        return 2;
    };
    if !listeners.is_empty()
        && let Err(e) = crate::handoff::start_keeper(listeners)
    {
        eprintln!("bottle: {e}");
        return 1;
    }
    // Blocks until the host opens the FIFO to write.
    let mut received = Vec::new();
    let read =
        std::fs::File::open(go).and_then(|f| f.take(MAX_ENV_BYTES).read_to_end(&mut received));
    if let Err(e) = read {
        eprintln!("bottle: cannot read the go-ahead at {}: {e}", go.display());
        return 1;
    }
    let Some(env) = bottle_contract::go::decode(&received) else {
        eprintln!("bottle: the host did not start the agent's command");
        return 1;
    };
    let e = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .exec();
    eprintln!("bottle: cannot run `{program}` in the agent container: {e}");
    if e.kind() == std::io::ErrorKind::NotFound {
        NOT_FOUND
    } else {
        CANNOT_RUN
    }
}
