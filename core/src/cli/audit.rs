//! `bottle audit show`, `verify`, `export` and `key`.

use anyhow::{Context, Result};
use bottle::audit::{self, key::AuditKey};
use bottle::hostenv::HostEnv;
use bottle_contract::terminal::safe;
use std::path::PathBuf;
use std::process::ExitCode;

/// The user's audit key (made on first use).
fn user_key(env: &HostEnv) -> Result<AuditKey> {
    let dir = env
        .config_dir()
        .context("there is no config dir for the audit key: set HOME or XDG_CONFIG_HOME")?;
    Ok(AuditKey::load_or_create(&dir)?)
}

/// The ledger file `target` names: a file, or a bottle's (in its state dir, else kept with
/// the logs); and whether it is the checkpoint of a bottle still running, which ends at an
/// interim seal until teardown.
fn ledger_file(env: &HostEnv, target: &str) -> Result<(PathBuf, bool)> {
    let as_path = PathBuf::from(target);
    if target.contains('/') || as_path.is_file() {
        return Ok((as_path, false));
    }
    anyhow::ensure!(
        bottle::state::valid_slug(target),
        "`{target}` is neither a ledger file nor a bottle's slug"
    );
    let root = env
        .state_dir()
        .context("there is no state dir: set HOME or BOTTLE_STATE_DIR")?;
    let live = root.join(target).join(audit::LEDGER_FILE);
    if live.is_file() {
        return Ok((live, bottle::state::in_use(&root.join(target))));
    }
    let kept = root
        .join("logs")
        .join(format!("{target}.{}", audit::LEDGER_FILE));
    anyhow::ensure!(
        kept.is_file(),
        "bottle `{target}` has no ledger yet (it is sealed every 10 minutes while it runs, and at teardown)"
    );
    Ok((kept, false))
}

/// The ledger `file` checked: whole, or up to its last seal when `running`.
fn check(
    env: &HostEnv,
    file: &std::path::Path,
    running: bool,
) -> Result<(
    String,
    std::result::Result<audit::Verified, audit::VerifyError>,
)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let key = user_key(env)?;
    let checked = if running {
        audit::chain::verify_so_far(&text, &key.public())
    } else {
        audit::chain::verify(&text, &key.public())
    };
    Ok((text, checked))
}

pub(super) fn key(env: &HostEnv) -> Result<ExitCode> {
    let key = user_key(env)?;
    println!("{}", audit::chain::hex(&key.public()));
    Ok(ExitCode::SUCCESS)
}

/// What `verify` adds when the ledger records lines of the bundle's log it could not hold.
fn gaps_said(v: &audit::Verified) -> String {
    match v.records.iter().filter(|r| r.kind == "gap").count() {
        0 => String::new(),
        n => format!(
            "; it records {n} gap(s) in the bundle's log, where lines were lost (bottle audit show names them)"
        ),
    }
}

pub(super) fn verify(env: &HostEnv, target: &str) -> Result<ExitCode> {
    let (file, running) = ledger_file(env, target)?;
    match check(env, &file, running)?.1 {
        Ok(v) if v.complete => {
            println!(
                "ok {}: bottle {}, {} records, {} seals, the chain is whole and signed by your key{}",
                file.display(),
                safe(&v.slug),
                v.records.len(),
                v.seals,
                gaps_said(&v)
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(v) => {
            println!(
                "ok so far {}: bottle {} is still running; {} records up to its last seal at {}, signed by your key (the final seal comes at teardown)",
                file.display(),
                safe(&v.slug),
                v.records.len(),
                v.records.last().map(|r| safe(&r.time)).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}: {}", file.display(), safe(&e.to_string()));
            Ok(ExitCode::from(1))
        }
    }
}

/// The ledger `target` names, read and verified: shown or exported only once it holds (a
/// record of a changed ledger is no record). Its text too, whose lines the records are.
fn verified(env: &HostEnv, target: &str) -> Result<(String, audit::Verified)> {
    let (file, running) = ledger_file(env, target)?;
    let (text, checked) = check(env, &file, running)?;
    let v = checked.map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; `bottle audit verify` says the same",
            file.display()
        )
    })?;
    Ok((text, v))
}

/// `bottle audit export TARGET --format ocsf`: one OCSF event per record, as JSON lines.
pub(super) fn export(env: &HostEnv, target: &str) -> Result<ExitCode> {
    use std::io::Write as _;
    let (text, v) = verified(env, target)?;
    let mut out = std::io::stdout().lock();
    for (line, record) in text.split_terminator('\n').zip(&v.records) {
        let event = audit::ocsf::event(&v.slug, record, &audit::chain::line_hash(line));
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `raw` made safe to print on one row: what [`safe`] escapes, and line breaks and tabs too
/// (a reason the agent wrote could otherwise print rows of its own).
fn one_line(raw: &str) -> String {
    safe(raw)
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

pub(super) fn show(
    env: &HostEnv,
    target: &str,
    json: bool,
    decision: Option<&str>,
    since: Option<time::OffsetDateTime>,
) -> Result<ExitCode> {
    let (_, v) = verified(env, target)?;
    let field = |r: &audit::Record, k: &str| match r.data.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    for r in v
        .records
        .iter()
        .filter(|r| decision.is_none_or(|d| field(r, "decision") == d))
        .filter(|r| {
            since.is_none_or(|t| {
                time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|at| at >= t)
            })
        })
    {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let what = match r.kind.as_str() {
                "request" => format!(
                    "{} {} {}{} -> {} {}",
                    field(r, "decision"),
                    field(r, "method"),
                    field(r, "host"),
                    field(r, "path"),
                    field(r, "status"),
                    field(r, "reason")
                ),
                "stop" => format!("exit code {}", field(r, "exit_code")),
                "gap" => format!(
                    "{} log lines {}-{} are missing: {}",
                    field(r, "daemon"),
                    field(r, "first"),
                    field(r, "last"),
                    field(r, "why")
                ),
                "start" => format!(
                    "agent {}, plan {}",
                    field(r, "agent"),
                    field(r, "plan_sha256")
                ),
                _ => String::new(),
            };
            println!(
                "{:>5}  {}  {:<14} {:<8} {}",
                r.seq,
                one_line(&r.time),
                one_line(&r.writer),
                one_line(&r.kind),
                one_line(&what)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_field_prints_on_one_row() {
        let reason = "bad query\n   57  2026-12-05T10:00:00Z  host  stop\tfake\r\x1b[2K";
        let shown = one_line(reason);
        assert!(!shown.contains(['\n', '\r', '\t', '\x1b']), "{shown}");
        assert!(shown.contains("\\n   57"), "{shown}");
    }
}
