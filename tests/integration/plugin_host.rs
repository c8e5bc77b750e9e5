//! The plugin host against real components: bad plugins, cache, purity, discovery.

use crate::support::plugins;
use bottle::model::*;
use bottle::plugin::{
    self, Cache, CacheStatus, CallError, LoadError, PluginHost, PluginSource, TrapKind,
};
use std::path::{Path, PathBuf};

fn host() -> PluginHost {
    PluginHost::new(
        Cache::at(&crate::support::shared_cache()),
        plugin::Limits::default(),
    )
}

fn load(host: &PluginHost, path: &str) -> Result<plugin::LoadedPlugin, LoadError> {
    let bytes = std::fs::read(path).unwrap();
    host.load(PluginSource::File(PathBuf::from(path)), &bytes, None)
}

fn bottle_with(settings: &str) -> (Bottle, String) {
    let bottle = Bottle {
        slug: "t-abcde".into(),
        agent: Agent {
            name: "t".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            workdir: "/w".into(),
            env: EnvMap::new(),
            secret_env: vec![],
        },
        git: vec![],
        allowlist: vec!["api.anthropic.com".into()],
        routes: vec![],
        supervise: false,
    };
    (bottle, settings.to_owned())
}

/// After any failure the host still loads and runs a good plugin.
fn host_survives(host: &PluginHost) {
    let set = plugin::discover(host, &[]).unwrap();
    let (b, _) = bottle_with("{}");
    set.get("pipelock").unwrap().prepare(&b, "{}").unwrap();
}

fn misbehave(how: &str) -> CallError {
    let host = host();
    let p = load(&host, plugins::misbehave()).unwrap();
    let (b, s) = bottle_with(&format!(r#"{{"do": "{how}"}}"#));
    let started = std::time::Instant::now();
    let err = p.prepare(&b, &s).unwrap_err();
    eprintln!(
        "misbehave {how}: stopped after {:?}: {err}",
        started.elapsed()
    );
    host_survives(&host);
    err
}

#[test]
fn a_guest_panic_shows_its_message() {
    let err = misbehave("panic");
    assert!(
        matches!(
            &err,
            CallError::Trap {
                kind: TrapKind::Panic,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("misbehave was told to panic"), "{msg}");
    assert!(
        msg.contains("`misbehave`") && msg.contains("`prepare`"),
        "{msg}"
    );
}

#[test]
fn an_infinite_loop_is_stopped() {
    let err = misbehave("loop");
    assert!(
        matches!(
            &err,
            CallError::Trap {
                kind: TrapKind::OutOfFuel | TrapKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("loop forever"), "{err}");
}

#[test]
fn a_loop_with_unlimited_fuel_is_stopped_by_the_epoch_deadline() {
    let limits = plugin::Limits {
        fuel: u64::MAX,
        epoch_ticks: 5,
        ..plugin::Limits::default()
    };
    let host = PluginHost::new(Cache::at(&crate::support::shared_cache()), limits);
    let p = load(&host, plugins::misbehave()).unwrap();
    let (b, s) = bottle_with(r#"{"do": "loop"}"#);
    let err = p.prepare(&b, &s).unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::Trap {
                kind: TrapKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("ran past its time limit"), "{err}");
}

#[test]
fn a_memory_bomb_stops_at_the_limit() {
    let err = misbehave("oom");
    assert!(
        matches!(
            &err,
            CallError::Trap {
                kind: TrapKind::OutOfMemory,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory limit"), "{err}");
}

#[test]
fn a_filesystem_import_is_refused_at_load() {
    let host = host();
    let err = load(&host, plugins::fs_import()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ForbiddenImport { .. }), "{msg}");
    assert!(msg.contains("wasi:filesystem"), "{msg}");
    assert!(msg.contains("fs_import.wasm"), "names the file: {msg}");
    host_survives(&host);
}

#[test]
fn an_incompatible_api_version_is_refused_naming_both_versions() {
    let host = host();
    let err = load(&host, plugins::wrong_api()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::IncompatibleApi { .. }), "{msg}");
    assert!(msg.contains("9.0.0"), "its version: {msg}");
    assert!(msg.contains("^0.1.0"), "the supported range: {msg}");
    assert!(msg.contains("wrong_api.wasm"), "the file: {msg}");
    host_survives(&host);
}

#[test]
fn not_webassembly_and_truncated_components_are_clear_errors() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "just some text\n").unwrap();
    let err = host
        .load(
            PluginSource::File(text.clone()),
            &std::fs::read(&text).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, LoadError::NotComponent { .. }), "{err}");
    assert!(
        err.to_string().contains("notes.wasm")
            && err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );

    let bytes = std::fs::read(plugins::hello()).unwrap();
    let half = &bytes[..bytes.len() / 2];
    let err = host
        .load(PluginSource::File("half.wasm".into()), half, None)
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("half.wasm: cannot compile component"),
        "{err}"
    );

    let empty = host
        .load(PluginSource::File("empty.wasm".into()), &[], None)
        .unwrap_err();
    assert!(empty.to_string().contains("the file is empty"), "{empty}");
    host_survives(&host);
}

#[test]
fn a_corrupt_cache_entry_is_a_miss_not_a_crash() {
    let cache_dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Cache::at(cache_dir.path()), plugin::Limits::default());
    let bytes = std::fs::read(plugins::hello()).unwrap();
    let src = || PluginSource::File(plugins::hello().into());
    assert_eq!(
        host.load(src(), &bytes, None).unwrap().cache_status(),
        CacheStatus::Miss
    );
    assert_eq!(
        host.load(src(), &bytes, None).unwrap().cache_status(),
        CacheStatus::Hit
    );
    let entries = cwasm_files(cache_dir.path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Truncated, then garbage: each is detected, recompiled and rewritten.
    let good = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &good[..good.len() / 3]).unwrap();
    assert_eq!(
        host.load(src(), &bytes, None).unwrap().cache_status(),
        CacheStatus::Corrupt
    );
    assert_eq!(
        host.load(src(), &bytes, None).unwrap().cache_status(),
        CacheStatus::Hit
    );
    std::fs::write(&entries[0], b"\x7fELF garbage").unwrap();
    let p = host.load(src(), &bytes, None).unwrap();
    assert_eq!(p.cache_status(), CacheStatus::Corrupt);
    let (b, s) = bottle_with("{}");
    p.prepare(&b, &s).unwrap();
}

/// Compiled code is native code: an entry loads only if its MAC (keyed with the cache's own
/// 0600 key, bound to the plugin's hash) verifies. Another plugin's valid entry moved under
/// this name, or one made with another key, is recompiled, never run.
#[test]
fn a_planted_or_swapped_cache_entry_is_never_loaded() {
    let cache_dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Cache::at(cache_dir.path()), plugin::Limits::default());
    let hello = std::fs::read(plugins::hello()).unwrap();
    let other = std::fs::read(plugins::misbehave()).unwrap();
    let src = |p: &str| PluginSource::File(p.into());
    host.load(src(plugins::hello()), &hello, None).unwrap();
    host.load(src(plugins::misbehave()), &other, None).unwrap();
    let entries = cwasm_files(cache_dir.path());
    assert_eq!(entries.len(), 2, "{entries:?}");
    let key = cache_dir.path().join("cache.key");
    assert_eq!(crate::support::mode(&key), 0o600);
    let hello_entry = entries
        .iter()
        .find(|e| {
            e.to_string_lossy()
                .contains(&bottle::plugin::content_hash(&hello))
        })
        .unwrap()
        .clone();
    let other_entry = entries.iter().find(|e| **e != hello_entry).unwrap().clone();
    std::fs::copy(&other_entry, &hello_entry).unwrap();
    let p = host.load(src(plugins::hello()), &hello, None).unwrap();
    assert_eq!(p.cache_status(), CacheStatus::Corrupt, "a swapped entry");
    assert_eq!(p.info().name, "hello", "the real plugin was compiled");
    // An entry made by another cache (another key) is as foreign.
    let elsewhere = tempfile::tempdir().unwrap();
    let host2 = PluginHost::new(Cache::at(elsewhere.path()), plugin::Limits::default());
    host2.load(src(plugins::hello()), &hello, None).unwrap();
    let foreign = cwasm_files(elsewhere.path()).pop().unwrap();
    std::fs::copy(&foreign, &hello_entry).unwrap();
    let p = host.load(src(plugins::hello()), &hello, None).unwrap();
    assert_eq!(p.cache_status(), CacheStatus::Corrupt, "a foreign entry");
    assert_eq!(
        host.load(src(plugins::hello()), &hello, None)
            .unwrap()
            .cache_status(),
        CacheStatus::Hit
    );
}

#[test]
fn a_cache_dir_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = PluginHost::new(Cache::at(dir.path()), plugin::Limits::default());
    let bytes = std::fs::read(plugins::hello()).unwrap();
    let p = host
        .load(PluginSource::File(plugins::hello().into()), &bytes, None)
        .unwrap();
    assert_eq!(p.cache_status(), CacheStatus::Disabled);
    assert!(cwasm_files(dir.path()).is_empty());
}

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "cwasm") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_same_input_twice_gives_byte_identical_output() {
    let host = host();
    let set = plugin::discover(&host, &[]).unwrap();
    let (mut b, _) = bottle_with("{}");
    b.routes = vec![EgressRoute {
        host: "api.github.com".into(),
        path_allowlist: vec!["/repos/".into()],
        auth: Some(RouteAuth {
            scheme: "Bearer".into(),
            token_ref: "GH".into(),
        }),
    }];
    b.supervise = true;
    for p in set.sidecars() {
        let once = serde_json::to_string(&p.prepare(&b, "{}").unwrap()).unwrap();
        let twice = serde_json::to_string(&p.prepare(&b, "{}").unwrap()).unwrap();
        assert_eq!(once, twice, "{} prepare", p.name());
        let ctx = RenderContext {
            bottle: b.clone(),
            cas: vec![],
            endpoints: vec![],
        };
        let once = serde_json::to_string(&p.render(&ctx, "{}").unwrap()).unwrap();
        let twice = serde_json::to_string(&p.render(&ctx, "{}").unwrap()).unwrap();
        assert_eq!(once, twice, "{} render", p.name());
    }
}

/// Names that name a part of every bottle (`agent`, `bundle`, `ca`, `bottle`, `sidecars`) are
/// no plugin's to take.
#[test]
fn a_plugin_with_a_reserved_name_is_refused() {
    let sb = crate::support::Sandbox::new();
    let dir = sb.plugin_dir("plugins", &[plugins::reserved_name()]);
    let err = plugin::discover(&host(), std::slice::from_ref(&dir))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the plugin name `bottle` is reserved")
            && err.contains("bottle_test_reserved_name.wasm"),
        "{err}"
    );
}

#[test]
fn a_plugin_dir_adds_plugins_and_overrides_builtins() {
    let sb = crate::support::Sandbox::new();
    let dir = sb.plugin_dir("plugins", &[plugins::hello(), plugins::pipelock_override()]);
    let host = host();
    let set = plugin::discover(&host, std::slice::from_ref(&dir)).unwrap();
    assert_eq!(
        set.get("hello").unwrap().source(),
        &PluginSource::File(dir.join("bottle_example_hello.wasm"))
    );
    assert_eq!(set.get("pipelock").unwrap().info().version, "9.9.9");
    assert_eq!(set.overrides().len(), 1);
    assert_eq!(set.overrides()[0].name, "pipelock");

    // Two plugin dirs giving one name: an error naming both files.
    let again = sb.plugin_dir("again", &[plugins::hello()]);
    let err = plugin::discover(&host, &[dir, again])
        .unwrap_err()
        .to_string();
    assert!(err.contains("two plugins are named `hello`"), "{err}");
    assert!(
        err.contains("plugins/bottle_example_hello.wasm")
            && err.contains("again/bottle_example_hello.wasm"),
        "{err}"
    );
}

#[test]
fn calling_a_hook_of_the_other_kind_is_an_error() {
    let set = plugin::discover(&host(), &[]).unwrap();
    let (b, _) = bottle_with("{}");
    let err = set.get("docker").unwrap().prepare(&b, "{}").unwrap_err();
    assert!(
        err.to_string()
            .contains("is a backend plugin and has no `prepare` hook"),
        "{err}"
    );
}
