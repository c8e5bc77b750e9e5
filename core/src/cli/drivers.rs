//! `bottle drivers list` and `bottle drivers check`.

use anyhow::Result;
use bottle::hostenv::HostEnv;
use bottle::run::driver::native::NativeDriver;
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn check(env: &HostEnv, paths: &[PathBuf], dirs: &[PathBuf]) -> Result<ExitCode> {
    let policy = bottle::run::driver::policy(env, dirs)?;
    let mut failed = 0;
    for path in paths {
        let checked = NativeDriver::load(path, &policy)
            .and_then(|d| Ok((d.call(&bottle_driver_sdk::Request::Info)?, d)));
        match checked {
            Ok((info, d)) => {
                println!("ok {}", path.display());
                println!("  name: {}", d.name());
                println!("  abi:  {}", d.abi());
                println!("  trusted: {}", d.trust());
                println!("  info: {info}");
                // Whether this host can run the driver's bottles: a verdict, not a failure.
                match d.probe() {
                    Ok(p) if p.can_run => println!("  probe: can run: {}", p.reason),
                    Ok(p) => println!("  probe: cannot run: {}", p.reason),
                    Err(e) => println!("  probe: {e}"),
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", bottle_contract::terminal::safe(&e.to_string()));
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) fn list(env: &HostEnv, dirs: &[PathBuf]) -> Result<ExitCode> {
    let policy = bottle::run::driver::policy(env, dirs)?;
    let surveyed = bottle::run::driver::survey(&policy);
    if surveyed.is_empty() {
        println!("no driver files in: {}", policy.dirs_text());
    }
    for s in surveyed {
        let shown = s.path.display().to_string();
        let path = bottle_contract::terminal::safe(&shown);
        match s.loaded {
            Ok(d) => println!("{}  {path}\n  trusted: {}", d.name(), d.trust()),
            Err(e) => println!(
                "refused  {path}\n  {}",
                bottle_contract::terminal::safe(&e.to_string())
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
