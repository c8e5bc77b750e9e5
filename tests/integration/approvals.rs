//! `bottle approve`'s planning side, without Docker: a live re-plan changes only the route
//! files, what cannot change live is refused, bad queue files and gone bottles get clear
//! errors, `--persist` reaches the next run. (The live reload itself: `docker_e2e`.)

use crate::support::{Sandbox, run, shared_cache};
use bottle::hostenv::HostEnv;
use bottle::live::granted::Access;
use std::path::{Path, PathBuf};

const ASKER: &str = "image: bottle-agent:latest\ncwd: none\nsupervise: true\negress:\n  allowlist: [pypi.org]\n  routes:\n    - host: api.github.com\n      path_allowlist: [/repos/]\n      auth: {scheme: Bearer, token_ref: GH_TOKEN}\n";

/// A dry-run state dir of the `asker` agent (its run has ended: nothing holds its lock).
fn planned(sb: &Sandbox) -> PathBuf {
    sb.agent("asker", ASKER);
    dry_run(sb);
    sb.only_state_dir()
}

/// `bottle run asker --dry-run`, which must succeed: what it said on stderr.
fn dry_run(sb: &Sandbox) -> String {
    let (code, out, err) =
        run(sb
            .bottle()
            .env("GH_TOKEN", "x")
            .args(["run", "asker", "--dry-run"]));
    assert_eq!(code, 0, "{out}{err}");
    err
}

fn env(sb: &Sandbox) -> HostEnv {
    HostEnv::from_vars([
        ("HOME".to_owned(), sb.dir.path().display().to_string()),
        (
            "BOTTLE_CACHE_DIR".to_owned(),
            shared_cache().display().to_string(),
        ),
    ])
}

fn propose(
    sb: &Sandbox,
    dir: &Path,
    access: Access,
) -> Result<bottle::live::apply::Proposal, String> {
    let env = env(sb);
    let record = bottle::live::apply::RunRecord::load(dir).map_err(|e| e.to_string())?;
    let plugins = bottle::plugin::discover(
        &bottle::plugin::PluginHost::for_env(&env),
        &record.plugin_dirs,
    )
    .unwrap();
    bottle::live::apply::propose(&plugins, &env, dir, &record, access).map_err(|e| e.to_string())
}

/// A request as `bottle-supervise` queues it.
fn queue(dir: &Path, id: &str, host: &str) {
    let q = dir.join("supervise/queue");
    for sub in ["pending", "decisions"] {
        std::fs::create_dir_all(q.join(sub)).unwrap();
    }
    std::fs::write(
        q.join("pending").join(format!("{id}.json")),
        serde_json::json!({
            "id": id, "kind": "host-access", "host": host,
            "reason": "pip install", "created": "2026-11-28T00:00:00Z",
        })
        .to_string(),
    )
    .unwrap();
}

#[test]
fn a_live_replan_changes_only_the_route_table_and_pipelocks_allowlist() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    let p = propose(
        &sb,
        &dir,
        Access::checked("static.rust-lang.org", None).unwrap(),
    )
    .unwrap();
    let paths: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["pipelock/pipelock.yaml", "egress/routes.yaml"]);
    assert!(
        p.files
            .iter()
            .all(|f| f.contents.contains("static.rust-lang.org"))
    );
    // A path prefix: a route with no credential, limited to it.
    let p = propose(
        &sb,
        &dir,
        Access::checked("docs.rs", Some("/serde/")).unwrap(),
    )
    .unwrap();
    let routes = &p
        .files
        .iter()
        .find(|f| f.path == "egress/routes.yaml")
        .unwrap()
        .contents;
    assert!(
        routes.contains("- host: docs.rs\n  path_allowlist:\n  - /serde/\n"),
        "{routes}"
    );
    // Already allowed: nothing to change.
    let p = propose(&sb, &dir, Access::checked("pypi.org", None).unwrap()).unwrap();
    assert!(p.is_empty());
    // A credential's route is never widened by an approval.
    let e = propose(
        &sb,
        &dir,
        Access::checked("api.github.com", Some("/orgs/")).unwrap(),
    )
    .unwrap_err();
    assert!(e.contains("injects a credential"), "{e}");
}

#[test]
fn what_cannot_change_under_a_running_agent_is_refused_not_half_applied() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    // The run as recorded with an env var more: the agent's container would differ.
    let file = dir.join("run.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let text = record["manifest_text"].as_str().unwrap().to_owned();
    record["manifest_text"] = format!("{text}env: {{EXTRA: x}}\n").into();
    std::fs::write(&file, record.to_string()).unwrap();
    let e = propose(&sb, &dir, Access::checked("crates.io", None).unwrap()).unwrap_err();
    assert!(
        e.contains("would change the containers") && e.contains("restart the bottle"),
        "{e}"
    );
    // A record that is not bottle's names the file and what to do.
    std::fs::write(&file, "{\"manifest_file\": 1}").unwrap();
    let e = propose(&sb, &dir, Access::checked("crates.io", None).unwrap()).unwrap_err();
    assert!(e.contains("run.json") && e.contains("restart it"), "{e}");
}

#[test]
fn approving_for_a_bottle_that_has_gone_is_a_clear_error_and_records_nothing() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    queue(&dir, "r1", "crates.io");
    let (code, out, err) = run(sb.bottle().args(["approve", "r1", "--yes"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is not running any more"), "{err}");
    assert_eq!(decisions(&dir), 0);
    let (code, _, err) = run(sb.bottle().args(["approve", "nope"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("no request `nope`") && err.contains("bottle approvals"),
        "{err}"
    );
    // A path prefix the agent could not have asked for either.
    let (code, _, err) = run(sb
        .bottle()
        .args(["approve", "r1", "--path-prefix", "x/../y"]));
    assert_eq!(code, 1);
    assert!(err.contains("path prefix"), "{err}");
}

#[test]
fn approvals_of_a_slug_no_bottle_has_is_an_error_not_an_empty_list() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    queue(&dir, "r1", "crates.io");
    let slug = dir.file_name().unwrap().to_str().unwrap().to_owned();
    let (code, out, err) = run(sb.bottle().args(["approvals", &slug, "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"r1\""), "{out}");
    for args in [
        &["approvals", "nosuch"][..],
        &["approvals", "nosuch", "--json"],
    ] {
        let (code, out, err) = run(sb.bottle().args(args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            out.is_empty() && err.contains("no bottle `nosuch`") && err.contains("bottle ps"),
            "{args:?}: {out}{err}"
        );
    }
    // Not a slug at all (a path out of the state dir among them): refused as one.
    let (code, _, err) = run(sb.bottle().args(["approvals", "../x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("slugs are lower-case letters"), "{err}");
}

#[test]
fn a_malformed_decision_leaves_the_request_open_and_is_reported() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    queue(&dir, "r1", "crates.io");
    std::fs::write(
        dir.join("supervise/queue/decisions/r1.json"),
        "{\"decision\": \"yes\"",
    )
    .unwrap();
    let (code, out, _) = run(sb.bottle().arg("approvals"));
    assert_eq!(code, 0);
    assert!(out.contains("r1") && out.contains("pending"), "{out}");
    assert!(out.contains("is not a decision bottle wrote"), "{out}");
    let (_, json, _) = run(sb.bottle().args(["approvals", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v[0]["problem"].as_str().unwrap().contains("r1.json"), "{v}");
    // A reject replaces it with a real decision.
    let (code, out, err) = run(sb.bottle().args(["reject", "r1", "--note", "no"]));
    assert_eq!(code, 0, "{out}{err}");
    let (_, json, _) = run(sb.bottle().args(["approvals", "--json"]));
    assert!(json.contains("\"rejected\""), "{json}");
}

#[test]
fn persisted_approvals_reach_the_next_run_and_a_bad_file_is_named() {
    let sb = Sandbox::new();
    sb.agent("asker", ASKER);
    let config = sb.dir.path().join("config/bottle");
    // Kept by name alone (as bottle once did), they reach no manifest, and the run says so.
    let by_name = config.join("approved/asker.yaml");
    std::fs::create_dir_all(by_name.parent().unwrap()).unwrap();
    std::fs::write(&by_name, "access:\n- host: crates.io\n").unwrap();
    let err = dry_run(&sb);
    assert!(
        err.contains("kept by agent name") && !err.contains("approved in earlier runs"),
        "{err}"
    );
    std::fs::remove_file(&by_name).unwrap();
    std::fs::remove_dir_all(sb.only_state_dir()).unwrap();
    // Kept for this manifest, they reach its runs; another project's `asker` gets none.
    let manifest = sb.project().join("agents/asker.yaml");
    let file = bottle::live::granted::persisted_path(&config, &manifest);
    assert_ne!(
        file,
        bottle::live::granted::persisted_path(
            &config,
            &sb.dir.path().join("other/agents/asker.yaml")
        )
    );
    std::fs::write(
        &file,
        "access:\n- host: crates.io\n- host: docs.rs\n  path_prefix: /serde/\n",
    )
    .unwrap();
    let err = dry_run(&sb);
    assert!(
        err.contains("approved in earlier runs") && err.contains("crates.io, docs.rs/serde/…"),
        "{err}"
    );
    let dir = sb.only_state_dir();
    let routes = std::fs::read_to_string(dir.join("egress/routes.yaml")).unwrap();
    assert!(
        routes.contains("- host: crates.io") && routes.contains("- /serde/"),
        "{routes}"
    );
    // The run starts its own approvals with them, so a live approval keeps them.
    let p = propose(
        &sb,
        &dir,
        Access::checked("static.rust-lang.org", None).unwrap(),
    )
    .unwrap();
    let routes = &p
        .files
        .iter()
        .find(|f| f.path == "egress/routes.yaml")
        .unwrap()
        .contents;
    assert!(routes.contains("crates.io") && routes.contains("static.rust-lang.org"));
    std::fs::write(&file, "access:\n- host: 10.0.0.1\n").unwrap();
    let (code, _, err) = run(sb
        .bottle()
        .env("GH_TOKEN", "x")
        .args(["run", "asker", "--dry-run"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("not an IP address"),
        "{err}"
    );
}

/// `bottle dashboard` for real, in tmux: it shows the queued requests, `r` + a note + Enter
/// rejects the selected one (the decision file appears), `a` on a bottle whose run has ended
/// says so in the status line, `q` leaves.
#[test]
#[ignore = "e2e: needs tmux and a terminal; run with `cargo test --workspace -- --ignored`"]
fn the_dashboard_runs_in_a_real_terminal() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    queue(&dir, "r1", "crates.io");
    queue(&dir, "r2", "docs.rs");
    let server = format!("bottle-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let out = std::process::Command::new("tmux")
            .args(["-L", &server])
            .args(args)
            .output()
            .expect("tmux (Debian's package; .ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cmd = format!(
        "env BOTTLE_STATE_DIR={} BOTTLE_CACHE_DIR={} HOME={} TERM=xterm-256color {} dashboard",
        sb.state().display(),
        shared_cache().display(),
        sb.dir.path().display(),
        crate::support::bottle_bin().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "dash",
        "-x",
        "120",
        "-y",
        "30",
        &cmd,
    ]);
    let screen_with = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let pane = tmux(&["capture-pane", "-p", "-t", "dash"]);
            if pane.contains(needle) {
                return pane;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} never showed:\n{pane}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let pane = screen_with("the agent can reach docs.rs, no credential");
    assert!(
        pane.contains("2 open") && pane.contains("reason (the agent's words): pip install"),
        "{pane}"
    );
    tmux(&["send-keys", "-t", "dash", "r"]);
    screen_with("reject with note");
    tmux(&["send-keys", "-t", "dash", "-l", "use the mirror"]);
    tmux(&["send-keys", "-t", "dash", "Enter"]);
    let slug = dir.file_name().unwrap().to_string_lossy().into_owned();
    screen_with(&format!("rejected {slug}/r1"));
    let decision = std::fs::read_to_string(dir.join("supervise/queue/decisions/r1.json")).unwrap();
    assert!(
        decision.contains("\"rejected\"") && decision.contains("use the mirror"),
        "{decision}"
    );
    // The open one is now first; its bottle is not running, which the dashboard says.
    tmux(&["send-keys", "-t", "dash", "a"]);
    screen_with("is not running any more");
    tmux(&["send-keys", "-t", "dash", "q"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tmux(&["list-sessions"]).contains("dash") {
        assert!(std::time::Instant::now() < deadline, "q did not quit");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tmux(&["kill-server"]);
}

/// `bottle approvals --watch` prints a request as it comes and its decision when made.
#[test]
fn approvals_watch_prints_requests_and_decisions_as_they_come() {
    use std::io::BufRead;
    let sb = Sandbox::new();
    let dir = planned(&sb);
    queue(&dir, "r1", "crates.io");
    let mut child = sb
        .bottle()
        .args(["approvals", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let expect = |needle: &str| loop {
        let l = lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{needle:?} never printed"));
        if l.contains(needle) {
            return l;
        }
    };
    expect("(watching");
    queue(&dir, "r2", "docs.rs");
    let l = expect("r2");
    assert!(l.contains("pending") && l.contains("docs.rs"), "{l}");
    let (code, _, _) = run(sb.bottle().args(["reject", "r1"]));
    assert_eq!(code, 0);
    let l = expect("r1");
    assert!(l.contains("rejected"), "{l}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Two approvals planned against the same config: the one applied second finds the config
/// moved on and is refused untouched, instead of undoing the first.
#[test]
fn an_approval_planned_against_an_old_config_is_not_applied() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    // The run in progress holds its lock.
    let lock = std::fs::File::open(dir.join("run.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let a = propose(&sb, &dir, Access::checked("crates.io", None).unwrap()).unwrap();
    let b = propose(&sb, &dir, Access::checked("docs.rs", None).unwrap()).unwrap();
    // A is applied (what apply writes for it, without the reload).
    std::fs::write(
        dir.join("plan.json"),
        serde_json::to_vec_pretty(&a.plan).unwrap(),
    )
    .unwrap();
    let routes = std::fs::read_to_string(dir.join("egress/routes.yaml")).unwrap();
    // A client only: a call through it would fail on the unknown container, not race.
    let docker = bollard::Docker::connect_with_socket_defaults().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(bottle::live::apply::apply(&docker, "x", &b, "test"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another change was applied"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.join("egress/routes.yaml")).unwrap(),
        routes
    );
    drop(lock);
}

/// Hold `dir`'s run lock, as a running `bottle run` does, until dropped.
fn hold_run_lock(dir: &Path) -> std::fs::File {
    use rustix::fs::{FlockOperation, flock};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("run.lock"))
        .unwrap();
    flock(&f, FlockOperation::LockExclusive).unwrap();
    f
}

fn decisions(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("supervise/queue/decisions"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

/// `bottle approve ID`, which the agent's own reply tells the user to run, shows what it
/// would grant before it grants anything: without a terminal it refuses with that text and
/// points at `--yes`; on a terminal, anything but `y` leaves the request open. The agent's
/// words are shown without the escapes it slipped in.
#[test]
fn approve_shows_what_it_grants_and_grants_nothing_unasked() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    let q = dir.join("supervise/queue/pending");
    std::fs::create_dir_all(&q).unwrap();
    std::fs::create_dir_all(dir.join("supervise/queue/decisions")).unwrap();
    std::fs::write(
        q.join("r1.json"),
        serde_json::json!({
            "id": "r1", "kind": "host-access", "host": "crates.io",
            "reason": "need the index \u{1b}]0;pwned\u{7}\u{1b}[2J now",
            "failed_url": "https://crates.io/\u{9b}31m", "created": "2026-11-28T00:00:00Z",
        })
        .to_string(),
    )
    .unwrap();
    let _lock = hold_run_lock(&dir);
    let (code, out, err) = run(sb
        .bottle()
        .args(["approve", "r1"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(code, 1, "{out}{err}");
    for shown in [
        "request r1 of bottle",
        "grants:   the agent can reach crates.io, any path, with no credential",
        "changes:  pipelock's pipelock/pipelock.yaml and egress's egress/routes.yaml",
        "for:      this run only",
        "reason:   (the agent's words) need the index ]0;pwned [2J now",
        "refused:  https://crates.io/ 31m",
    ] {
        assert!(out.contains(shown), "{shown:?} missing in:\n{out}");
    }
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{9b}') && !out.contains('\u{7}'),
        "{out:?}"
    );
    assert!(
        err.contains("not granted") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(decisions(&dir), 0, "nothing was granted");
    // A request whose URL names another host than the one it asks for (supervise refuses
    // it; a queue file is writable from the bundle) is shown with a warning.
    std::fs::write(
        q.join("r2.json"),
        serde_json::json!({
            "id": "r2", "kind": "host-access", "host": "files-pythonhosted.org",
            "reason": "pip", "failed_url": "https://files.pythonhosted.org/x.whl",
            "created": "2026-11-28T00:00:00Z",
        })
        .to_string(),
    )
    .unwrap();
    let (code, out, err) = run(sb
        .bottle()
        .args(["approve", "r2"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("WARNING:  that URL is not on files-pythonhosted.org"),
        "{out}"
    );
    // On a terminal: asked, and a stray answer grants nothing.
    let script = crate::support::workspace().join("tests/integration/pty_answer.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["Grant it? [y/N]", "a"])
        .arg(crate::support::bottle_bin())
        .args(["approve", "r1", "--persist"])
        .current_dir(sb.project())
        .env("BOTTLE_STATE_DIR", sb.state())
        .env("BOTTLE_CACHE_DIR", shared_cache())
        .env("XDG_CONFIG_HOME", sb.dir.path().join("config"))
        .env("HOME", sb.dir.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("for:      this run and every later run of asker (--persist)")
            && shown.contains("not granted; the request stays open"),
        "{shown}"
    );
    assert_eq!(decisions(&dir), 0, "nothing was granted");
}

/// A wildcard over a public suffix is refused at approve too (supervise refuses it first; a
/// queue file is writable from the bundle).
#[test]
fn approve_refuses_a_wildcard_over_a_public_suffix() {
    let sb = Sandbox::new();
    let dir = planned(&sb);
    for (id, host) in [
        ("r1", "*.co.uk"),
        ("r2", "*.github.io"),
        ("r3", "*.s3.amazonaws.com"),
        ("r4", "*.amazonaws.com"),
    ] {
        queue(&dir, id, host);
    }
    let _lock = hold_run_lock(&dir);
    for id in ["r1", "r2", "r3"] {
        let (code, out, err) = run(sb.bottle().args(["approve", id, "--yes"]));
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("is a public suffix"), "{err}");
    }
    // Not a suffix itself, but anyone's buckets and sites lie below it.
    let (code, out, err) = run(sb.bottle().args(["approve", "r4", "--yes"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("anyone can register"), "{err}");
    assert_eq!(decisions(&dir), 0);
}
