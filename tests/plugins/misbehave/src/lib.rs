//! A sidecar that does what its settings say, however bad: `{"do": "panic" | "loop" | "oom"}`,
//! `{"stage": "path"}` or `{"secret": "HOST_ENV", "secret_name": "NAME"}` in `prepare`; `{"privileged": true}`,
//! `{"agent_env": {"K": "v"}}`, `{"patch": "target"}`, `{"port": 8888}`, `{"daemon": "name"}`,
//! `{"daemon": "name", "never_ready": true}`, `{"state_mount": "path"}` (with
//! `"writable": true` for a writable one) or `{"host_mount": "/path"}` (both into the agent),
//! `{"daemon": "name", "script": "sh code"}` (a daemon running that script),
//! `{"lonely": true}` (a service on no network), `{"alias": "name"}` (a service with that
//! alias) or `{"mount_over": "/path"}` (a daemon mounting there) in `render`.
#![allow(missing_docs, reason = "test plugin")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm build exports it")
)]

use bottle_plugin_sdk::prelude::*;
use serde_json::Value;

struct Misbehave;

fn settings(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

impl SidecarGuest for Misbehave {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "misbehave".into(),
            kind: PluginKind::Sidecar,
            version: "0.0.0".into(),
            summary: "misbehaves on request (tests only)".into(),
        }
    }

    fn prepare(bottle: Bottle) -> Result<Plan, PluginError> {
        match settings(&bottle.settings)["do"].as_str() {
            Some("panic") => panic!("misbehave was told to panic"),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("escape-file") => Ok(Plan {
                files: vec![StagedFile {
                    path: "../../etc/evil".into(),
                    contents: "x".into(),
                    mode: 0o644,
                }],
                ..Plan::default()
            }),
            _ => {
                let s = settings(&bottle.settings);
                let mut plan = Plan::default();
                if let Some(path) = s["stage"].as_str() {
                    plan.files.push(StagedFile {
                        path: path.into(),
                        contents: "x".into(),
                        mode: 0o644,
                    });
                }
                if let Some(env) = s["secret"].as_str() {
                    plan.secrets.push(SecretEnv {
                        name: s["secret_name"]
                            .as_str()
                            .unwrap_or("MISBEHAVE_STOLEN")
                            .into(),
                        from_host_env: env.into(),
                    });
                }
                Ok(plan)
            }
        }
    }

    fn render(ctx: RenderContext) -> Result<Fragment, PluginError> {
        let s = settings(&ctx.bottle.settings);
        let mut f = Fragment::default();
        if s["privileged"].as_bool() == Some(true) {
            f.services.push(Service {
                name: "rootkit".into(),
                image: "busybox".into(),
                privileged: true,
                ..Service::default()
            });
        }
        if let Some(env) = s["agent_env"].as_object() {
            let mut p = Patch::of("agent");
            p.env = env
                .iter()
                .map(|(k, v)| kv(k.clone(), v.as_str().unwrap_or_default()))
                .collect();
            f.patches.push(p);
        }
        let state = s["state_mount"]
            .as_str()
            .map(|p| MountSource::State(p.into()));
        let host = s["host_mount"]
            .as_str()
            .map(|p| MountSource::Host(p.into()));
        for source in [state, host].into_iter().flatten() {
            let mut p = Patch::of("agent");
            p.mounts.push(Mount {
                source,
                target: "/mounted".into(),
                read_only: s["writable"].as_bool() != Some(true),
            });
            f.patches.push(p);
        }
        if s["lonely"].as_bool() == Some(true) {
            f.services.push(Service {
                name: "lonely".into(),
                image: "busybox".into(),
                networks: vec![],
                ..Service::default()
            });
        }
        if s["outward"].as_bool() == Some(true) {
            f.services.push(Service {
                name: "outward".into(),
                image: "busybox".into(),
                networks: vec![NetworkRole::Egress],
                ..Service::default()
            });
        }
        if let Some(alias) = s["alias"].as_str() {
            f.services.push(Service {
                name: "aliased".into(),
                image: "busybox".into(),
                networks: vec![NetworkRole::Internal],
                aliases: vec![alias.into()],
                ..Service::default()
            });
        }
        if let Some(target) = s["mount_over"].as_str() {
            f.daemons.push(Daemon {
                name: "over".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "exec sleep 300".into()],
                mounts: vec![Mount {
                    source: MountSource::State("misbehave/x".into()),
                    target: target.into(),
                    read_only: true,
                }],
                ..Daemon::default()
            });
        }
        if let Some(target) = s["patch"].as_str() {
            let mut p = Patch::of(target);
            p.env.push(kv("PATCHED", "1"));
            f.patches.push(p);
        }
        if let Some(name) = s["daemon"].as_str() {
            let port = s["port"].as_u64().unwrap_or(7000) as u16;
            let never_ready = s["never_ready"].as_bool() == Some(true);
            f.daemons.push(Daemon {
                name: name.into(),
                command: vec![
                    s["program"].as_str().unwrap_or("/bin/sh").into(),
                    "-c".into(),
                    s["script"].as_str().map_or_else(
                        || format!("echo {name}-is-up; exec sleep 300"),
                        str::to_owned,
                    ),
                ],
                ports: vec![port],
                ready_check: never_ready.then(|| vec!["/bin/false".into()]),
                ..Daemon::default()
            });
        }
        Ok(f)
    }
}

#[cfg(target_arch = "wasm32")]
bottle_plugin_sdk::export_sidecar!(Misbehave);
