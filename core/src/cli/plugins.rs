//! `bottle plugins list|check`.

use super::PluginArgs;
use anyhow::{Context, Result};
use bottle::hostenv::HostEnv;
use bottle::plugin::{self, LoadedPlugin, PluginHost, PluginSet, PluginSource};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn host(env: &HostEnv) -> PluginHost {
    PluginHost::for_env(env)
}

/// The built-ins plus `args`' plugin dirs, with overrides reported.
pub(super) fn load_all(env: &HostEnv, args: &PluginArgs) -> Result<PluginSet> {
    let set = plugin::discover(&host(env), &args.plugin_dirs)?;
    for o in set.overrides() {
        eprintln!(
            "note: plugin `{}` from {} replaces the built-in one",
            o.name, o.by
        );
    }
    Ok(set)
}

fn record(p: &LoadedPlugin) -> serde_json::Value {
    serde_json::json!({
        "name": p.name(),
        "kind": p.info().kind,
        "version": p.info().version,
        "api": p.api_version().to_string(),
        "source": p.source().to_string(),
        "content_hash": p.content_hash(),
        "summary": p.info().summary,
    })
}

pub(super) fn list(env: &HostEnv, args: &PluginArgs, json: bool) -> Result<ExitCode> {
    let set = load_all(env, args)?;
    if json {
        let all: Vec<_> = set.all().iter().map(record).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:<8} {:<6} {:<28} {:<14} SUMMARY",
        "NAME", "KIND", "API", "SOURCE", "HASH"
    );
    for p in set.all() {
        println!(
            "{:<14} {:<8} {:<6} {:<28} {:<14} {}",
            p.name(),
            p.info().kind.to_string(),
            p.api_version().to_string(),
            p.source().to_string(),
            &p.content_hash()[..12],
            p.info().summary
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn check(env: &HostEnv, paths: &[PathBuf]) -> Result<ExitCode> {
    let host = host(env);
    let mut failed = 0;
    for path in paths {
        let source = PluginSource::File(path.clone());
        let loaded = std::fs::read(path)
            .with_context(|| format!("{}: cannot read plugin", path.display()))
            .and_then(|bytes| Ok(host.load(source, &bytes, None)?));
        match loaded {
            Ok(p) => {
                println!("ok {}", path.display());
                println!("  name:    {}", p.name());
                println!("  kind:    {}", p.info().kind);
                println!("  version: {}", p.info().version);
                println!("  api:     {}", p.api_version());
                println!("  hash:    {}", p.content_hash());
                println!("  summary: {}", p.info().summary);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
