//! Plugin host speed: load every built-in cold (no cache) and warm (cache), and one full
//! prepare+render pass over the largest example agent.
//!
//! Goal (issue 2): warm load of all plugins plus one full pass under 10 ms on a 2-core machine.
//! Run: `cargo bench -p bottle --bench plugins`.

use bottle::plugin::{self, Cache, PluginHost};
use bottle::{manifest, planner};
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
    let total = ms(warm) + ms(pass);
    println!(
        "warm load + one pass:                  {total:8.2} ms   goal 10 ms: ratio {:.2} ({})",
        total / 10.0,
        if total < 10.0 { "met" } else { "NOT met" }
    );
}
