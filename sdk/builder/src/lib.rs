//! Builds bottle plugin crates into WebAssembly components from a build script.
//!
//! `bottle` embeds its built-in plugins, and its test suite builds its test plugins, by calling
//! [`build_components`] from `build.rs`. It runs a nested `cargo build --target wasm32-wasip2`
//! with its own target dir (so it never waits on the outer build's lock) and a clean environment
//! (so the outer build's wrapper and flags, e.g. clippy's, do not leak into the wasm build).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every plugin is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The cargo profile plugins are built with (defined in the workspace `Cargo.toml`).
pub const PROFILE: &str = "plugin";

/// The cargo profile the sidecar bundle's programs are built with (defined in the workspace
/// `Cargo.toml`; `CARGO_PROFILE_BUNDLE_*` variables override it, as CI does to build faster).
pub const BUNDLE_PROFILE: &str = "bundle";

/// The dir, under the outer build's target dir, that every nested build of this crate shares:
/// the built-in plugins, the bundle's programs and the test plugins then compile their host
/// tools (proc macros, build scripts) and common dependencies once, not once per build.
pub const NESTED_DIR: &str = "nested";

/// One built component.
#[derive(Debug, Clone)]
pub struct Component {
    /// The cargo package name (`bottle-plugin-pipelock`).
    pub package: String,
    /// Path of the `.wasm` component.
    pub path: PathBuf,
}

/// Why a build failed; `Display` says what to do next.
#[derive(Debug)]
pub enum BuildError {
    /// `cargo` could not be started.
    Spawn(std::io::Error),
    /// The wasm target is missing from the toolchain.
    TargetMissing,
    /// The build ran and failed; the compiler's output was already streamed to stderr.
    Failed(String),
    /// The build said it succeeded but a component is missing.
    Missing(PathBuf),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Spawn(e) => write!(f, "could not run cargo to build plugins: {e}"),
            BuildError::TargetMissing => write!(
                f,
                "the {TARGET} target is not installed; run `rustup target add {TARGET}` and build again"
            ),
            BuildError::Failed(status) => {
                write!(
                    f,
                    "building plugins for {TARGET} failed ({status}); see the errors above"
                )
            }
            BuildError::Missing(p) => {
                write!(f, "plugin build produced no component at {}", p.display())
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// A `cargo build` of this workspace with `profile` in `target_dir`, with a clean environment.
fn cargo(
    workspace: &Path,
    target_dir: &Path,
    profile: &str,
    args: &[&str],
) -> Result<(), BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "--profile", profile, "--target-dir"])
        .arg(target_dir)
        .args(args);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(BuildError::Spawn)?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed(status.to_string()))
    }
}

/// Build `packages` of the workspace at `workspace` for [`TARGET`] into `target_dir`.
///
/// Returns the components in the order of `packages`.
pub fn build_components(
    workspace: &Path,
    target_dir: &Path,
    packages: &[&str],
) -> Result<Vec<Component>, BuildError> {
    if !target_installed(TARGET) {
        return Err(BuildError::TargetMissing);
    }
    let mut args = vec!["--target", TARGET];
    for p in packages {
        args.extend(["-p", p]);
    }
    cargo(workspace, target_dir, PROFILE, &args)?;
    packages
        .iter()
        .map(|p| {
            let path = target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", p.replace('-', "_")));
            if path.is_file() {
                Ok(Component {
                    package: (*p).to_owned(),
                    path,
                })
            } else {
                Err(BuildError::Missing(path))
            }
        })
        .collect()
}

/// Build the binaries of `packages` with [`BUNDLE_PROFILE`] (one cargo call, so they share
/// their dependencies) for `target` (the host when `None`) and return their paths, in order.
pub fn build_binaries(
    workspace: &Path,
    target_dir: &Path,
    packages: &[&str],
    target: Option<&str>,
) -> Result<Vec<PathBuf>, BuildError> {
    let mut args = Vec::new();
    for p in packages {
        args.extend(["-p", p]);
    }
    let mut dir = target_dir.to_owned();
    if let Some(t) = target {
        args.extend(["--target", t]);
        dir.push(t);
    }
    cargo(workspace, target_dir, BUNDLE_PROFILE, &args)?;
    packages
        .iter()
        .map(|p| {
            let path = dir.join(BUNDLE_PROFILE).join(p);
            if path.is_file() {
                Ok(path)
            } else {
                Err(BuildError::Missing(path))
            }
        })
        .collect()
}

/// The static Linux target for `arch` (`x86_64-unknown-linux-musl`), when its standard library
/// is installed: a binary for it runs in any Linux container of that arch, whatever its libc.
pub fn static_linux_target(arch: &str) -> Option<String> {
    let target = format!("{arch}-unknown-linux-musl");
    target_installed(&target).then_some(target)
}

/// Whether rustup (or the sysroot) has `target`'s standard library.
fn target_installed(target: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return true; // let cargo report the real problem
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .is_dir()
}

/// The nested builds' dir ([`NESTED_DIR`]) of the build running this build script (found from
/// `OUT_DIR`), shared by every profile of the outer build.
pub fn shared_target_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    // OUT_DIR = <target>/<profile>/build/<pkg>-<hash>/out, or with --target one level deeper.
    out.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(nested_target_dir)
        .unwrap_or_else(|| out.join(NESTED_DIR))
}

/// The nested builds' dir under the outer build's target dir `target` (for tests, which know
/// theirs from `CARGO_TARGET_TMPDIR`).
pub fn nested_target_dir(target: &Path) -> PathBuf {
    target.join(NESTED_DIR)
}
