//! The `bottle` command line. Errors end here: one clear message on stderr and an exit code.
//!
//! Exit codes: 0 success; 1 an error bottle explains (bad manifest, plugin failure, refused
//! capability, Docker unreachable); 2 a usage error (unknown flag or command). `bottle run`
//! without `--dry-run` exits with the agent's own exit code.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // An error may quote what the agent or the bundle wrote (a path, a daemon's words).
            eprintln!(
                "error: {}",
                bottle_contract::terminal::safe(&format!("{e:#}"))
            );
            ExitCode::from(1)
        }
    }
}
