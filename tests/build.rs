//! Builds the test plugins and the example plugin for wasm32-wasip2; the tests find them through
//! the constants in `OUT_DIR/test_plugins.rs`.

use std::path::PathBuf;

const PLUGINS: &[(&str, &str)] = &[
    ("MISBEHAVE", "bottle-test-misbehave"),
    ("FS_IMPORT", "bottle-test-fs-import"),
    ("WRONG_API", "bottle-test-wrong-api"),
    ("PIPELOCK_OVERRIDE", "bottle-test-pipelock-override"),
    ("HELLO", "bottle-example-hello"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("tests/ sits in the workspace root").to_owned();
    for dir in ["tests/plugins", "examples", "sdk/src", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let packages: Vec<&str> = PLUGINS.iter().map(|(_, p)| *p).collect();
    let built = bottle_plugin_builder::build_components(&workspace, &bottle_plugin_builder::shared_target_dir(), &packages)
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        });
    let mut out = String::new();
    for ((constant, _), c) in PLUGINS.iter().zip(built) {
        out.push_str(&format!("/// Built component.\npub const {constant}: &str = {:?};\n", c.path.display().to_string()));
    }
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("test_plugins.rs");
    std::fs::write(dest, out).expect("writing test_plugins.rs");
}
