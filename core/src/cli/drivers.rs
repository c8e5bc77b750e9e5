//! `bottle drivers check`.

use anyhow::Result;
use bottle::driver::native::{LoadPolicy, NativeDriver};
use bottle::hostenv::HostEnv;
use std::path::PathBuf;
use std::process::ExitCode;

/// The dir of the running `bottle`: drivers installed with it load from there.
fn install_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .canonicalize()
        .ok()?
        .parent()
        .map(PathBuf::from)
}

pub(super) fn check(env: &HostEnv, paths: &[PathBuf], dirs: &[PathBuf]) -> Result<ExitCode> {
    let policy = LoadPolicy::new(install_dir().as_deref(), dirs, env.config_dir().as_deref())?;
    let mut failed = 0;
    for path in paths {
        let checked = NativeDriver::load(path, &policy)
            .and_then(|d| Ok((d.call(&bottle_driver_sdk::Request::Info)?, d)));
        match checked {
            Ok((info, d)) => {
                println!("ok {}", path.display());
                println!("  name: {}", d.name());
                println!("  abi:  {}", d.abi());
                println!("  info: {info}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
