//! Plugin host speed: load every built-in cold (no cache) and warm (cache), and one full
//! prepare+render pass over the largest example agent.
//!
//! Goal (issue 2): warm load of all plugins plus one full pass under 10 ms on a 2-core machine.
//! Run: `cargo bench -p bottle --bench plugins`.

use bottle::plan::{manifest, planner};
use bottle::plugin::{self, Cache, PluginHost};
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cold = time(3, || {
        let host = PluginHost::new(Cache::disabled(), plugin::Limits::default());
        plugin::discover(&host, &[]).expect("built-ins load")
    });
    // Fill the cache once, then measure warm loads with a fresh host each time (as a new process would).
    plugin::discover(
        &PluginHost::new(Cache::at(cache_dir.path()), plugin::Limits::default()),
        &[],
    )
    .expect("fill");
    let warm = time(30, || {
        let host = PluginHost::new(Cache::at(cache_dir.path()), plugin::Limits::default());
        plugin::discover(&host, &[]).expect("built-ins load")
    });

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let env = bottle::hostenv::HostEnv::from_process();
    let m =
        manifest::load(&workspace.join("agents/implementer.yaml"), &env).expect("example manifest");
    let host = PluginHost::new(Cache::at(cache_dir.path()), plugin::Limits::default());
    let set = plugin::discover(&host, &[]).expect("load");
    let bottle = m.bottle("implementer-bench");
    let declared = m.declared();
    let pass = time(100, || {
        planner::plan(
            &set,
            &planner::PlanRequest {
                bottle: &bottle,
                settings: &m.settings,
                grants: &m.grants,
                declared: &declared,
                state_dir: "/state/implementer-bench",
                backend: "docker",
                agent_mounts: &[],
                left_out: &[],
                docker_socket: None,
            },
        )
        .expect("plan")
    });
    // The cache's MAC covers every byte of compiled code on each warm load: the one it used
    // before (HMAC-SHA256) beside the one it uses now (keyed BLAKE3), over the same entries.
    let entries: Vec<Vec<u8>> = walk_files(cache_dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .map(|p| std::fs::read(p).expect("entry"))
        .collect();
    let total_bytes: usize = entries.iter().map(Vec::len).sum();
    let key = [7u8; 32];
    let hmac_sha256 = time(30, || {
        use hmac::Mac as _;
        for e in &entries {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key");
            m.update(e);
            std::hint::black_box(m.finalize());
        }
    });
    let keyed_blake3 = time(30, || {
        for e in &entries {
            std::hint::black_box(blake3::keyed_hash(&key, e));
        }
    });
    let n = set.all().len();
    println!(
        "plugins: {n} built-ins ({})",
        set.all()
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("cold load (compile, no cache), all:   {:8.2} ms", ms(cold));
    println!(
        "warm load (from cache), all:           {:8.2} ms   ({:.0}x faster than cold)",
        ms(warm),
        ms(cold) / ms(warm)
    );
    println!("one prepare+render pass (implementer): {:8.2} ms", ms(pass));
    println!(
        "cache MAC over {} entries ({:.1} MB): HMAC-SHA256 {:.2} ms, keyed BLAKE3 {:.2} ms ({:.1}x faster)",
        entries.len(),
        total_bytes as f64 / 1e6,
        ms(hmac_sha256),
        ms(keyed_blake3),
        ms(hmac_sha256) / ms(keyed_blake3)
    );
    let total = ms(warm) + ms(pass);
    println!(
        "warm load + one pass:                  {total:8.2} ms   goal 10 ms: ratio {:.2} ({})",
        total / 10.0,
        if total < 10.0 { "met" } else { "NOT met" }
    );
}
