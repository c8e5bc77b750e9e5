//! `bottle drivers check`.

use anyhow::Result;
use bottle::driver::native::NativeDriver;
use bottle::hostenv::HostEnv;
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn check(env: &HostEnv, paths: &[PathBuf], dirs: &[PathBuf]) -> Result<ExitCode> {
    let policy = bottle::driver::policy(env, dirs)?;
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
