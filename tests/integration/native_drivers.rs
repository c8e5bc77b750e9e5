//! Native drivers through the real loader: the test drivers in `tests/drivers/` are built from
//! source as cdylibs and loaded with libloading, and every refusal is one clear line.

use crate::support::workspace;
use bottle::run::driver::native::{LoadPolicy, NativeDriver, NativeError};
use bottle_driver_sdk::Request;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The test drivers' dir (and the smolmachines driver's), built once per test process.
///
/// In a target dir of their own, never beside a `bottle` binary cargo built: bottle trusts the
/// drivers in its install dir, and these (one panics, one claims a terabyte-long answer, one
/// leaves a marker when loaded) must never be loaded by a `bottle ps` a developer runs.
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = crate::support::target_dir().join("test-drivers");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target)
            .args([
                "-p",
                "bottle-test-driver-good",
                "-p",
                "bottle-test-driver-old-abi",
                "-p",
                "bottle-test-driver-no-call",
                "-p",
                "bottle-test-driver-rogue",
                "-p",
                "bottle-driver-smolmachines",
            ])
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "building the test drivers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug")
    })
}

/// A dir holding a copy of the test driver `name` (so each test has its own allowed dir).
fn install(dir: &Path, name: &str) -> PathBuf {
    let file = format!("libbottle_driver_{name}.so");
    let to = dir.join(&file);
    std::fs::copy(built().join(&file), &to).unwrap();
    to
}

/// `sha256:HEX` of the file at `path`, as drivers.yaml pins it.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(std::fs::read(path).unwrap());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A policy allowing `dir`, with `pins` written to a config dir.
fn policy(dir: &Path, pins: &[(&str, String)]) -> LoadPolicy {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let text: String = pins.iter().map(|(n, h)| format!("  {n}: {h}\n")).collect();
    let file = if text.is_empty() {
        "drivers: {}\n".to_owned()
    } else {
        format!("drivers:\n{text}")
    };
    std::fs::write(config.join("drivers.yaml"), file).unwrap();
    LoadPolicy::new(None, &[dir.to_owned()], Some(&config)).unwrap()
}

#[test]
fn a_pinned_driver_loads_answers_and_its_panic_is_an_error_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let path = install(d.path(), "good");
    let driver = NativeDriver::load(&path, &policy(d.path(), &[("good", sha256(&path))])).unwrap();
    assert_eq!(driver.name(), "good");
    assert_eq!(driver.abi(), "1.1.0");
    let info = driver.call(&Request::Info).unwrap();
    assert_eq!(info["name"], "good");
    let e = driver.call(&Request::Probe).unwrap_err().to_string();
    assert_eq!(
        e,
        "this host cannot run good machines: no engine here (driver `good`)"
    );
    let up = |slug: &str| Request::Up {
        slug: slug.into(),
        state_dir: "/s".into(),
        image_archive: None,
        hop_token: None,
        bundle_address: None,
    };
    let e = driver.call(&up("panic")).unwrap_err();
    assert!(matches!(e, NativeError::Panicked { .. }), "{e}");
    assert!(e.to_string().contains("asked to panic"), "{e}");
    // The driver (and this process) go on after the panic.
    assert_eq!(driver.call(&up("a-1")).unwrap()["up"], "a-1");
}

#[test]
fn unpinned_changed_and_misplaced_drivers_are_refused_before_loading() {
    let d = tempfile::tempdir().unwrap();
    let path = install(d.path(), "good");
    let hash = sha256(&path);
    let e = NativeDriver::load(&path, &policy(d.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("driver `good` is not pinned") && e.contains(&format!("good: {hash}")),
        "{e}"
    );
    let other = format!("sha256:{}", "0".repeat(64));
    let e = NativeDriver::load(&path, &policy(d.path(), &[("good", other)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("the file changed since you pinned it"), "{e}");
    // Pinned, but in a dir nobody named.
    let elsewhere = tempfile::tempdir().unwrap();
    let stray = install(elsewhere.path(), "good");
    let p = policy(d.path(), &[("good", hash)]);
    let e = NativeDriver::load(&stray, &p).unwrap_err().to_string();
    assert!(
        e.contains("load only from bottle's install dir or a --driver-dir"),
        "{e}"
    );
    // A link in the allowed dir to a file outside it is judged by where it leads.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&stray, &path).unwrap();
    let e = NativeDriver::load(&path, &p).unwrap_err().to_string();
    assert!(
        e.contains(&format!("-> {}", stray.canonicalize().unwrap().display()))
            && e.contains("load only from"),
        "{e}"
    );
    // Missing files, fifos and dirs that are not there: each its own line.
    let e = NativeDriver::load(&d.path().join("libbottle_driver_gone.so"), &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such driver file"), "{e}");
    let fifo = d.path().join("libbottle_driver_fifo.so");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = NativeDriver::load(&fifo, &p).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let e = LoadPolicy::new(None, &[d.path().join("nowhere")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--driver-dir") && e.contains("nowhere"), "{e}");
}

/// Nothing of a driver runs, not even its load constructor, until it passes the pin check; a
/// length it claims beyond reason is refused, never read.
#[test]
fn a_refused_driver_never_runs_and_a_lying_answer_is_not_read() {
    let d = tempfile::tempdir().unwrap();
    let path = install(d.path(), "rogue");
    let marker = PathBuf::from(format!(
        "/tmp/bottle-test-driver-rogue-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&marker);
    let e = NativeDriver::load(&path, &policy(d.path(), &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not pinned"), "{e}");
    assert!(!marker.exists(), "the unpinned driver's constructor ran");
    // Without a config dir nothing is pinned, and no drivers.yaml is read from the cwd.
    let e = NativeDriver::load(
        &path,
        &LoadPolicy::new(None, &[d.path().to_owned()], None).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("there is no config dir"), "{e}");
    assert!(!marker.exists());
    let driver = NativeDriver::load(&path, &policy(d.path(), &[("rogue", sha256(&path))])).unwrap();
    assert!(
        marker.exists(),
        "the pinned driver's constructor did not run"
    );
    let _ = std::fs::remove_file(&marker);
    let e = driver.call(&Request::Info).unwrap_err().to_string();
    assert!(e.contains("more than the 16 MiB bottle takes"), "{e}");
}

#[test]
fn a_wrong_abi_a_missing_symbol_and_garbage_are_one_clear_line_each() {
    let d = tempfile::tempdir().unwrap();
    let old = install(d.path(), "old_abi");
    let nocall = install(d.path(), "no_call");
    let garbage = d.path().join("libbottle_driver_garbage.so");
    std::fs::write(&garbage, "this is no ELF file\n").unwrap();
    let p = policy(
        d.path(),
        &[
            ("old_abi", sha256(&old)),
            ("no_call", sha256(&nocall)),
            ("garbage", sha256(&garbage)),
        ],
    );
    let cases = [
        (
            old,
            "built for driver ABI \"0.9.0\", but this bottle speaks 1.1 or a later 1.x",
        ),
        (nocall, "no `bottle_driver_call`"),
        (garbage, "not a loadable driver"),
    ];
    for (path, expected) in cases {
        let e = NativeDriver::load(&path, &p).unwrap_err().to_string();
        assert!(e.contains(expected), "{}: {e}", path.display());
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// `bottle drivers check` says what to pin, and loads the driver once it is pinned.
#[test]
fn drivers_check_names_the_pin_to_add_then_loads_the_driver() {
    let sb = crate::support::Sandbox::new();
    let dir = sb.dir.path().join("drivers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = install(&dir, "good");
    let check = || {
        crate::support::run(
            sb.bottle()
                .args(["drivers", "check", "--driver-dir"])
                .arg(&dir)
                .arg(&path),
        )
    };
    let (code, _, err) = check();
    assert_eq!(code, 1);
    let pins = sb.dir.path().join("config/bottle/drivers.yaml");
    assert!(
        err.contains(&format!("good: {}", sha256(&path)))
            && err.contains(&pins.display().to_string()),
        "{err}"
    );
    std::fs::write(&pins, format!("drivers:\n  good: {}\n", sha256(&path))).unwrap();
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("name: good") && out.contains("abi:  1.1.0"),
        "{out}"
    );
}

/// A driver installed with bottle (beside its binary, owned by the binary's owner, writable by
/// no one else) loads with no pin; the same file from a `--driver-dir` still needs one, and
/// one in the install dir that someone else could have written is refused, saying why.
#[test]
fn a_driver_installed_with_bottle_loads_unpinned_and_a_driver_dir_one_still_asks() {
    use std::os::unix::fs::PermissionsExt as _;
    let sb = crate::support::Sandbox::new();
    // Under target/, so the binary can be hard-linked rather than copied.
    let home = tempfile::tempdir_in(workspace().join("target")).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = crate::support::install_bottle(home.path());
    let driver = install(home.path(), "good");
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o644)).unwrap();
    let elsewhere = sb.dir.path().join("drivers");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other = install(&elsewhere, "good");
    let installed = |args: &[&str]| {
        let mut cmd = sb.bottle();
        cmd.env_remove("BOTTLE_DRIVER_PATH");
        crate::support::run(
            std::process::Command::new(&bin).args(args).envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            ),
        )
    };
    let (code, out, err) = installed(&["drivers", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("good  {}", driver.display()))
            && out.contains("trusted: installed with bottle"),
        "{out}"
    );
    let (code, out, err) = installed(&["drivers", "check", &driver.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("trusted: installed with bottle"), "{out}");
    // The same bytes from a dir the user named: a pin is asked for.
    let dir = elsewhere.display().to_string();
    let (code, out, err) = installed(&[
        "drivers",
        "check",
        "--driver-dir",
        &dir,
        &other.display().to_string(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("driver `good` is not pinned") && !err.contains("install dir"),
        "{err}"
    );
    // Group-writable in the install dir: not installed with bottle, so a pin is asked for, and
    // the line says why.
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, out, _) = installed(&["drivers", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("refused") && out.contains("group or others may write it (mode 664)"),
        "{out}"
    );
    std::fs::set_permissions(&driver, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, out, _) = installed(&["drivers", "list"]);
    assert!(out.contains("group or others may write its dir"), "{out}");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Owned by someone else than the binary's owner: the loader says whose it is.
    let p = LoadPolicy::new(
        Some(bottle::run::driver::native::InstallDir {
            dir: home.path().to_owned(),
            owner: 4242,
        }),
        &[],
        None,
    )
    .unwrap();
    let e = NativeDriver::load(&driver, &p).unwrap_err().to_string();
    assert!(
        e.contains("it lies in bottle's install dir, but it is owned by uid")
            && e.contains("not by uid 4242"),
        "{e}"
    );
}
