//! Builds every crate under `plugins/` for wasm32-wasip2 and embeds the components, so one
//! `bottle` binary works alone. `plugins/<name>/` is package `bottle-plugin-<name>` and becomes
//! the built-in `<name>.wasm`.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("core/ sits in the workspace root")
        .to_owned();
    for dir in [
        "plugins",
        "sdk/src",
        "sdk/compose/src",
        "sdk/wit",
        "core/init",
        "core/contract",
        "core/probe",
        "daemons",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    // The nested builds read these (e.g. CI lightens the bundle's profile), so a change to one
    // must rebuild what is embedded.
    for setting in [
        "OPT_LEVEL",
        "LTO",
        "CODEGEN_UNITS",
        "DEBUG_ASSERTIONS",
        "OVERFLOW_CHECKS",
    ] {
        println!("cargo:rerun-if-env-changed=CARGO_PROFILE_BUNDLE_{setting}");
        println!("cargo:rerun-if-env-changed=CARGO_PROFILE_PLUGIN_{setting}");
    }
    let names = plugin_names(&workspace.join("plugins"));
    let packages: Vec<String> = names.iter().map(|n| format!("bottle-plugin-{n}")).collect();
    let package_refs: Vec<&str> = packages.iter().map(String::as_str).collect();
    let target_dir = bottle_plugin_builder::shared_target_dir();
    let components =
        match bottle_plugin_builder::build_components(&workspace, &target_dir, &package_refs) {
            Ok(c) => c,
            Err(e) => {
                println!("cargo:warning={e}");
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let mut out = String::from(
        "/// The embedded plugins, sorted by file name.\nstatic BUILTINS: &[Builtin] = &[\n",
    );
    for (name, c) in names.iter().zip(&components) {
        let bytes = std::fs::read(&c.path).expect("the builder checked the component exists");
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let embedded = keep(&out_dir, &format!("{name}.wasm"), &bytes);
        writeln!(
            out,
            "    Builtin {{ file: \"{name}.wasm\", bytes: include_bytes!({embedded:?}), hash: \"{hash}\" }},"
        )
        .expect("writing to a String");
    }
    out.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), out)
        .expect("writing OUT_DIR/builtin_plugins.rs");

    // The sidecar bundle's own programs, embedded so `bottle images build` needs nothing else:
    // its PID 1, the egress proxy, git-gate and supervise; and the escape suite's probe, which `bottle verify` mounts
    // into the agent. Static (musl) when that target is installed, so they run
    // on any bundle base whatever its glibc.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    let static_target = bottle_plugin_builder::static_linux_target(&arch);
    if static_target.is_none() {
        println!(
            "cargo:warning=the bundle's programs are linked against this machine's glibc and may not run in a bundle image with an older one; `rustup target add {arch}-unknown-linux-musl` (and musl-tools) makes them static"
        );
    }
    let bins = bottle_plugin_builder::build_binaries(
        &workspace,
        &target_dir,
        &BUNDLE_BINARIES.map(|(package, _)| package),
        static_target.as_deref(),
    )
    .unwrap_or_else(|e| {
        println!("cargo:warning={e}");
        std::process::exit(1);
    });
    let mut out = String::new();
    for ((package, name), path) in BUNDLE_BINARIES.iter().zip(&bins) {
        let bytes = std::fs::read(path).expect("the builder checked the binary exists");
        let path = keep(&out_dir, package, &bytes);
        // Its digest now, once: a run that checks the bundle image is current must not hash
        // megabytes of programs each time.
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            out,
            "/// The `{package}` binary.\npub static {name}: &[u8] = include_bytes!({path:?});\n/// The sha256 of [`{name}`], hex.\npub const {name}_SHA256: &str = \"{digest}\";"
        )
        .expect("writing to a String");
    }
    writeln!(
        out,
        "/// Whether the programs above are static (built for the musl target): only then do they run\n/// in an agent image whatever its libc.\npub const BUNDLE_BINARIES_STATIC: bool = {};",
        static_target.is_some()
    )
    .expect("writing to a String");
    std::fs::write(out_dir.join("bundle_binaries.rs"), out)
        .expect("writing OUT_DIR/bundle_binaries.rs");
}

/// The bundle's programs: cargo package (also the file name in the image) and static name.
const BUNDLE_BINARIES: [(&str, &str); 5] = [
    ("bottle-init", "INIT_BINARY"),
    ("bottle-egress", "EGRESS_BINARY"),
    ("bottle-git-gate", "GIT_GATE_BINARY"),
    ("bottle-supervise", "SUPERVISE_BINARY"),
    ("bottle-probe", "PROBE_BINARY"),
];

/// `bytes` (a built plugin or program) written to `out_dir/file`, the copy this build embeds.
///
/// The nested builds' dir is shared: a crate that reuses a plugin's renderer with other
/// features (a test plugin does) rewrites that plugin's file there later, which must change
/// neither what this build embedded nor whether cargo thinks it must build `bottle` again.
fn keep(out_dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let path = out_dir.join(file);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

fn plugin_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("plugins/ exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
