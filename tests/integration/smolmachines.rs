//! The smolmachines backend through its native driver and the real smolvm CLI (the PyPI wheel
//! `smolmachines==1.32.2`, which `.ci/run` installs into `target/smolvm-venv`).
//!
//! This workplace's machines cannot boot a microVM (nested PVM KVM), so a run goes as far as
//! the boot and must then fail with one clear line, leaving nothing. Where the driver's probe
//! says a microVM can boot, the same test runs the agent for real instead.

use crate::docker_e2e::{alone, docker, leftovers, shared, unique_slug};
use crate::native_drivers::{built, sha256};
use crate::support::{Sandbox, run, workspace};
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT: &str =
    "image: bottle-agent:latest\ncwd: none\nsupervise: true\negress:\n  allowlist: [docs.rs]\n";

/// The smolvm binary: `$BOTTLE_SMOLVM`, else the wheel in `target/smolvm-venv`.
fn smolvm() -> PathBuf {
    if let Some(p) = std::env::var_os("BOTTLE_SMOLVM") {
        return PathBuf::from(p);
    }
    let lib = workspace().join("target/smolvm-venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|rd| {
        rd.flatten()
            .map(|e| e.path().join("site-packages/smol/smol-vmm"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "smolvm is not installed in {}: run `bash tests/smolvm/install.sh` (.ci/run does)",
            lib.display()
        )
    })
}

/// A sandbox whose config pins the smolmachines driver, and the dir the driver is in.
fn sandbox() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    sb.agent("vm", AGENT);
    let driver = built().join("libbottle_driver_smolmachines.so");
    let config = sb.dir.path().join("config/bottle");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("drivers.yaml"),
        format!("drivers:\n  smolmachines: {}\n", sha256(&driver)),
    )
    .unwrap();
    (sb, built().to_owned())
}

/// `bottle` with the driver's dir and the engine named; VMs run as the caller (root here has
/// /dev/kvm 0600, which smolvm's per-VM users cannot open) so the run really tries to boot.
fn bottle(sb: &Sandbox, driver_dir: &Path) -> Command {
    let mut cmd = sb.bottle();
    cmd.env_remove("BOTTLE_PIPELOCK")
        .env("BOTTLE_DRIVER_PATH", driver_dir)
        .env("BOTTLE_SMOLVM", smolvm())
        .env("SMOLVM_VM_UID_DROP", "off");
    cmd
}

/// The machines smolvm keeps under `engine_state`, as `machine ls --json` lists them.
fn machines(engine_state: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(smolvm())
        .args(["machine", "ls", "--json", "--state-dir"])
        .arg(engine_state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A planned smolmachines bottle `slug` (a real state dir, from `--dry-run`) with a machine
/// record made by the real CLI (creating one needs no boot).
fn machine_record(sb: &Sandbox, drivers: &Path, slug: &str) -> PathBuf {
    let (code, out, err) = run(bottle(sb, drivers).args([
        "run",
        "vm",
        "--dry-run",
        "--backend",
        "smolmachines",
        "--slug",
        slug,
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let state = sb.state().join(slug);
    let engine = state.join("smolvm/engine");
    std::fs::create_dir_all(&engine).unwrap();
    let rootfs = state.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    let out = Command::new(smolvm())
        .args(["machine", "create", "--name", &format!("bottle-{slug}")])
        .args(["--label", &format!("io.bottle.slug={slug}"), "--image"])
        .arg(format!("{}/", rootfs.display()))
        .arg("--state-dir")
        .arg(&engine)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(machines(&engine).len(), 1);
    state
}

/// The HTTP status `curl` gets with `args` (at most 10 s).
fn status_of(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait for bottle `slug`'s bundle to be healthy, then check what the VM would reach: the
/// container's own address on the bundle network, nothing published on the host. Another
/// local process reaches that address too, so the hop is checked: `curl` through egress
/// without the token is refused (407), with the bundle's token it is served; supervise's MCP
/// endpoint likewise (401, then served, its `Host` the address).
fn hop_checked(slug: &str) -> Result<(), String> {
    let bundle = format!("bottle-sidecars-{slug}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let healthy = docker(&["inspect", "-f", "{{.State.Health.Status}}", &bundle]);
        if healthy == "healthy" {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{bundle} never became healthy"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let published = docker(&["port", &bundle]);
    if !published.is_empty() {
        return Err(format!("{bundle} publishes ports on the host: {published}"));
    }
    let address = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"bottle-bundle-{slug}\").IPAddress}}}}"),
        &bundle,
    ]);
    if address.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!(
            "{bundle} has no address on its network: {address:?}"
        ));
    }
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &bundle,
    ]);
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("EGRESS_HOP_TOKEN="))
        .filter(|t| t.len() == 64)
        .ok_or("the bundle has no hop token")?
        .to_owned();
    let curl = |proxy: &str| status_of(&["-x", proxy, "http://_egress.local/allowlist"]);
    let egress = format!("{address}:9099");
    let without = curl(&format!("http://{egress}"));
    let wrong = curl(&format!("http://bottle:{}@{egress}", "0".repeat(64)));
    let with = curl(&format!("http://bottle:{token}@{egress}"));
    if (without.as_str(), wrong.as_str(), with.as_str()) != ("407", "407", "200") {
        return Err(format!(
            "egress at {egress}: without the token: {without}, a wrong one: {wrong}, the bundle's: {with} (want 407, 407, 200)"
        ));
    }
    // supervise, the same token as a bearer (what the VM's MCP config sends).
    if env
        .lines()
        .find_map(|l| l.strip_prefix("SUPERVISE_HOP_TOKEN="))
        != Some(token.as_str())
    {
        return Err("supervise has not the bundle's hop token".into());
    }
    let supervise = format!("{address}:9100");
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let mcp = |bearer: Option<&str>| {
        let auth = bearer.map(|b| format!("authorization: Bearer {b}"));
        let mut args = vec![
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "--data",
            initialize,
        ];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        let url = format!("http://{supervise}/");
        args.push(&url);
        status_of(&args)
    };
    let (without, wrong, with) = (mcp(None), mcp(Some(&"0".repeat(64))), mcp(Some(&token)));
    if (without.as_str(), wrong.as_str(), with.as_str()) != ("401", "401", "200") {
        return Err(format!(
            "supervise at {supervise}: without the token: {without}, a wrong one: {wrong}, the bundle's: {with} (want 401, 401, 200)"
        ));
    }
    Ok(())
}

#[test]
#[ignore = "e2e: needs Docker, the test images and smolvm (`bash tests/smolvm/install.sh`); run with `cargo test --workspace -- --ignored`"]
fn a_run_goes_up_to_the_boot_then_says_why_in_one_line_and_leaves_nothing() {
    let _engine = shared();
    let (sb, drivers) = sandbox();
    let slug = unique_slug("vm-boot");
    // The gate: the driver's own probe, through `bottle drivers check`.
    let (code, out, err) = run(bottle(&sb, &drivers)
        .args(["drivers", "check", "--driver-dir"])
        .arg(&drivers)
        .arg(drivers.join("libbottle_driver_smolmachines.so")));
    assert_eq!(code, 0, "{out}{err}");
    let probe = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("probe: "))
        .unwrap_or_else(|| panic!("no probe line in:\n{out}"))
        .to_owned();
    let can_run = probe.starts_with("can run");
    let child = bottle(&sb, &drivers)
        .args([
            "run",
            "vm",
            "--yes",
            "--backend",
            "smolmachines",
            "--slug",
            &slug,
            "--",
            "sh",
            "-c",
            "echo booted",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the engine works on the machine, the bundle is up: a local process without the
    // hop token is refused; the token the agent's side carries works.
    let hop = hop_checked(&slug);
    let out = child.wait_with_output().unwrap();
    let (code, out, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(hop.is_ok(), "{}\n{out}{err}", hop.unwrap_err());
    let state = sb.state().join(&slug);
    if can_run {
        // The gated boot test: a host with hardware KVM runs the agent for real.
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("booted"), "{out}{err}");
    } else {
        eprintln!("microVM boot skipped: {probe}");
        assert_eq!(code, 1, "{out}{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].starts_with("error: this host cannot run microVMs: ")
                && errors[0].ends_with("(driver `smolmachines`)"),
            "{err}"
        );
        assert!(
            errors[0].contains("kvm_pvm") || errors[0].contains("/dev/kvm"),
            "{err}"
        );
        // Everything up to the boot really ran: the bundle's logs are kept.
        let log = std::fs::read_to_string(state.join("compose.log")).unwrap();
        assert!(log.contains("sidecars |"), "{log}");
    }
    // Nothing left: no machine (its engine state is gone with it), no container, network or
    // volume, no saved image.
    assert!(!state.join("smolvm").exists(), "the driver's state is left");
    assert!(!state.join("agent-image.tar").exists());
    assert_eq!(leftovers(&slug), "", "docker objects left");
    let stray = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("name=bottle-sidecars-{slug}"),
    ]);
    assert_eq!(stray, "");
}

#[test]
#[ignore = "e2e: needs Docker, the test images and smolvm (`bash tests/smolvm/install.sh`); run with `cargo test --workspace -- --ignored`"]
fn ps_stop_and_cleanup_cover_docker_containers_and_smolvm_machines() {
    let _engine = alone();
    // Before anything is made: without smolvm the test fails leaving nothing.
    smolvm();
    let (sb, drivers) = sandbox();
    // A docker bottle's container (bottle's name and labels) and two machines.
    let docker_slug = unique_slug("two-dk");
    let name = format!("bottle-sidecars-{docker_slug}");
    let made = docker(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("io.bottle.slug={docker_slug}"),
        "--label",
        "io.bottle.agent=vm",
        "--label",
        "io.bottle.role=sidecars",
        "bottle-agent:latest",
        "true",
    ]);
    assert!(!made.is_empty());
    let stop_slug = unique_slug("two-vm");
    let stop_state = machine_record(&sb, &drivers, &stop_slug);
    let clean_slug = format!("{stop_slug}x");
    let clean_state = machine_record(&sb, &drivers, &clean_slug);

    let (code, out, err) = run(bottle(&sb, &drivers).arg("ps"));
    assert_eq!(code, 0, "{out}{err}");
    for slug in [&docker_slug, &stop_slug, &clean_slug] {
        assert!(out.contains(slug.as_str()), "{slug} not in:\n{out}{err}");
    }
    assert!(out.contains("smolmachines-vm:created"), "{out}");
    // A driver dir named on the command line is consulted as one in BOTTLE_DRIVER_PATH is.
    let (code, out, err) = run(bottle(&sb, &drivers)
        .env_remove("BOTTLE_DRIVER_PATH")
        .args(["ps", "--driver-dir"])
        .arg(&drivers));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(stop_slug.as_str()), "{out}{err}");

    let (code, out, err) = run(bottle(&sb, &drivers).args(["stop", &stop_slug]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!stop_state.join("smolvm").exists(), "{err}");

    let (code, out, err) = run(bottle(&sb, &drivers).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "machine   bottle-{clean_slug} (smolmachines driver"
        )),
        "{out}"
    );
    assert!(!clean_state.exists(), "{out}");
    assert_eq!(leftovers(&docker_slug), "");
    let (_, out, _) = run(bottle(&sb, &drivers).arg("ps"));
    for slug in [&docker_slug, &stop_slug, &clean_slug] {
        assert!(!out.contains(slug.as_str()), "{out}");
    }
}

#[test]
#[ignore = "e2e: needs Docker, the test images and smolvm (`bash tests/smolvm/install.sh`); run with `cargo test --workspace -- --ignored`"]
fn an_unpinned_driver_stops_the_run_before_anything_is_written() {
    let (sb, drivers) = sandbox();
    std::fs::write(
        sb.dir.path().join("config/bottle/drivers.yaml"),
        "drivers: {}\n",
    )
    .unwrap();
    let (code, out, err) =
        run(bottle(&sb, &drivers).args(["run", "vm", "--yes", "--backend", "smolmachines"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("driver `smolmachines` is not pinned"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert!(
        std::fs::read_dir(sb.state()).map_or(true, |mut d| d.next().is_none()),
        "a state dir was written"
    );
    // Installed beside bottle, the same driver needs no pin: the run gets past the driver (to
    // the backend's own refusal of `cwd: mount`, which is checked only once a driver loaded).
    let install = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let bin = crate::support::install_bottle(install.path());
    std::fs::copy(
        drivers.join("libbottle_driver_smolmachines.so"),
        install.path().join("libbottle_driver_smolmachines.so"),
    )
    .unwrap();
    sb.agent("vm", &AGENT.replace("cwd: none", "cwd: mount"));
    let mut cmd = bottle(&sb, &drivers);
    cmd.env_remove("BOTTLE_DRIVER_PATH");
    let (code, out, err) = run(Command::new(&bin)
        .args(["run", "vm", "--yes", "--backend", "smolmachines"])
        .current_dir(sb.project())
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        ));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("`cwd: mount` is not supported on the smolmachines backend"),
        "{err}"
    );
    sb.agent("vm", AGENT);
    // With no driver anywhere, the message says where to put one.
    let (code, _, err) = run(sb.bottle().env("BOTTLE_DRIVER_PATH", sb.dir.path()).args([
        "run",
        "vm",
        "--yes",
        "--backend",
        "smolmachines",
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains("needs its native driver `libbottle_driver_smolmachines.so`"),
        "{err}"
    );
}

/// The VM would write straight into a mounted dir (a `.git` your own git would then run), so a
/// run with `cwd: mount` (or `copy`) on this backend is refused before anything is written.
#[test]
#[ignore = "e2e: needs Docker, the test images and smolvm (`bash tests/smolvm/install.sh`); run with `cargo test --workspace -- --ignored`"]
fn a_working_dir_the_vm_would_write_into_is_refused_before_anything_is_written() {
    let (sb, drivers) = sandbox();
    for cwd in ["mount", "copy"] {
        sb.agent("vm", &AGENT.replace("cwd: none", &format!("cwd: {cwd}")));
        let (code, out, err) =
            run(bottle(&sb, &drivers).args(["run", "vm", "--yes", "--backend", "smolmachines"]));
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(&format!(
                "`cwd: {cwd}` is not supported on the smolmachines backend"
            )) && err.contains("set `cwd: none`"),
            "{err}"
        );
        assert!(
            std::fs::read_dir(sb.state()).map_or(true, |mut d| d.next().is_none()),
            "a state dir was written"
        );
    }
}
