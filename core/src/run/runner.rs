//! A launch, after [`crate::plan::prepare::prepare`], on any backend: one sequence through the
//! [`Driver`] contract (probe, up, attach, down), the audit ledger, the state dir retired.
//! Whatever happens after the probe (an error, a signal in any phase), teardown runs and the
//! logs are kept.

use crate::plan::prepare::Prepared;
use crate::run::docker::watch;
use crate::run::driver::{Driver, Launch, Teardown, Work};
use crate::run::launch::{LaunchError, LaunchOptions};
use crate::run::verify;
use bottle_contract::layout;
use std::path::PathBuf;

/// The result of a launch that got as far as running the agent.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The agent command's exit code.
    pub exit_code: i64,
    /// Where the merged logs are.
    pub log_file: PathBuf,
    /// Whether the state dir was kept.
    pub state_kept: bool,
    /// The escape suite's report, when it ran.
    pub report: Option<verify::Report>,
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
///
/// The handlers are installed when this is called, not when the future is first polled, and
/// one future is kept for the whole launch: a signal that arrives between two `select!`s is
/// held for the next one instead of being lost.
fn interrupted() -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

/// A launch's one interrupt: a signal future kept for the whole launch ([`interrupted`]), and
/// the one way a phase waits on it.
pub struct Interrupt(std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>);

impl Interrupt {
    /// Install the handlers for SIGINT and SIGTERM now.
    pub fn new() -> Self {
        Interrupt(Box::pin(interrupted()))
    }

    /// An interrupt that comes when `signal` resolves (a test's stand-in for a real signal).
    pub fn when(signal: impl Future<Output = &'static str> + Send + 'static) -> Self {
        Interrupt(Box::pin(signal))
    }

    /// `phase`'s result, unless a signal comes first ([`LaunchError::Interrupted`]); what the
    /// phase made is left for the teardown that follows.
    pub async fn or_stop<T, E: Into<LaunchError>>(
        &mut self,
        phase: impl Future<Output = Result<T, E>>,
    ) -> Result<T, LaunchError> {
        tokio::select! {
            r = phase => r.map_err(Into::into),
            sig = &mut self.0 => Err(LaunchError::Interrupted(sig)),
        }
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt::new()
    }
}

/// Launch `p` with `driver` and attach to its agent; tear everything down afterwards.
pub async fn launch(
    p: &Prepared,
    opts: &LaunchOptions,
    driver: &dyn Driver,
) -> Result<Outcome, LaunchError> {
    launch_until(p, opts, driver, Interrupt::new()).await
}

/// [`launch`], cut short by `stop` instead of a signal when it comes first.
pub async fn launch_until(
    p: &Prepared,
    opts: &LaunchOptions,
    driver: &dyn Driver,
    mut stop: Interrupt,
) -> Result<Outcome, LaunchError> {
    let started = crate::state::rfc3339(std::time::SystemTime::now());
    let state_root = p.state_dir.parent().unwrap_or(&p.state_dir);
    stop.or_stop(driver.probe(&p.slug, state_root)).await?;
    opts.phases.done("engine connected, no orphan");

    // From here on the slug is ours: whatever happens, tear down.
    let log_file = p.state_dir.join(layout::LOG_FILE);
    let launch = Launch {
        prepared: p,
        options: opts,
    };
    let result = tokio::select! {
        r = up_and_attach(driver, &launch, &mut stop) => r,
        never = ledger_checkpoints(driver, p, opts, &started) => match never {},
    };
    opts.phases.done("the agent's command ended");
    let teardown = driver
        .down(
            &p.slug,
            Teardown {
                state_dir: &p.state_dir,
                log_file: Some(&log_file),
                after_interrupt: is_interrupt(&result),
                // Once the agent is gone, its layer holds still: its work comes back now.
                work: if opts.verify == verify::Mode::Only {
                    Work::Discard
                } else {
                    Work::BringBack
                },
            },
        )
        .await;
    opts.phases
        .done("torn down (logs written, everything removed)");
    let logs = std::fs::read_to_string(&log_file).unwrap_or_default();
    let exit_code = result.as_ref().ok().map(|(c, _)| *c);
    if let Err(e) = write_ledger(p, opts, &started, &logs, exit_code, true) {
        eprintln!("warning: the audit ledger was not written: {e}");
    }
    let failed = result.is_err() || teardown.is_err();
    let mut state_kept = opts.keep_state || failed;
    let mut log_file = log_file;
    if !state_kept {
        match crate::state::retire(&p.state_dir) {
            Ok(archived) => log_file = archived,
            Err(e) => {
                eprintln!(
                    "warning: {e}; the state dir (it holds the bottle's CA keys) is kept: remove it by hand"
                );
                state_kept = true;
            }
        }
    }
    opts.phases.done("state dir retired");
    let (exit_code, report) = result?;
    teardown?;
    Ok(Outcome {
        exit_code,
        log_file,
        state_kept,
        report,
    })
}

/// Bring the bottle up, run the escape suite's verdict, attach: the agent's exit code and the
/// suite's report. Each phase gives way to `stop`.
async fn up_and_attach(
    driver: &dyn Driver,
    launch: &Launch<'_>,
    stop: &mut Interrupt,
) -> Result<(i64, Option<verify::Report>), LaunchError> {
    let started = stop.or_stop(driver.up(launch)).await?;
    let report = started.report();
    let slug = &launch.prepared.slug;
    match (launch.options.verify, &report) {
        (verify::Mode::Only, _) => return Ok((0, report)),
        (verify::Mode::First, Some(r)) if !r.held() => return Ok((1, report)),
        (verify::Mode::First, Some(r)) => eprintln!(
            "bottle {slug}: verify: {} probes, nothing escaped; handing over the terminal",
            r.findings.len()
        ),
        _ => {}
    }
    let code = stop.or_stop(started.attach()).await?;
    Ok((code, report))
}

/// Every [`LaunchOptions::ledger_seal_every`] while the bottle runs: the ledger so far, from
/// the driver's logs, sealed (an interim seal) into the state dir. Runs until dropped; a
/// failed checkpoint is logged and the next one tries again.
async fn ledger_checkpoints(
    driver: &dyn Driver,
    p: &Prepared,
    opts: &LaunchOptions,
    started: &str,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(opts.ledger_seal_every).await;
        let logs = match driver.logs(&p.slug, &p.state_dir).await {
            Ok(logs) => logs,
            Err(e) => {
                tracing::warn!("ledger checkpoint: {e}");
                continue;
            }
        };
        if let Err(e) = write_ledger(p, opts, started, &logs, None, false) {
            tracing::warn!("ledger checkpoint: {e}");
        }
    }
}

/// The run's audit ledger from its merged `logs`, sealed with the user's key, into the state
/// dir (kept with the logs when the dir is retired): at teardown (`last`) with the final seal,
/// during the run as a checkpoint.
fn write_ledger(
    p: &Prepared,
    opts: &LaunchOptions,
    started: &str,
    logs: &str,
    exit_code: Option<i64>,
    last: bool,
) -> Result<(), String> {
    use sha2::Digest as _;
    let config = opts
        .env
        .config_dir()
        .ok_or("there is no config dir for the audit key (set HOME or XDG_CONFIG_HOME)")?;
    let key = crate::audit::key::AuditKey::load_or_create(&config).map_err(|e| e.to_string())?;
    let plan = std::fs::read(p.state_dir.join(bottle_contract::layout::PLAN_FILE))
        .map_err(|e| format!("cannot read the plan: {e}"))?;
    let plan_sha256 = crate::audit::chain::hex(&sha2::Sha256::digest(&plan));
    let ended = crate::state::rfc3339(std::time::SystemTime::now());
    let run = crate::audit::collect::Run {
        slug: &p.slug,
        agent: &p.manifest.name,
        started,
        ended: &ended,
        plan_sha256: &plan_sha256,
        exit_code,
    };
    let host = crate::audit::collect::HostRecords {
        asked: p
            .state_dir
            .parent()
            .map(|root| crate::live::requests::list(root, Some(&p.slug)))
            .unwrap_or_default(),
        decided: crate::live::requests::recorded_decisions(&p.state_dir),
        // Unreadable approvals leave their records out; the chain still seals what was read.
        approved: crate::live::granted::Approved::load(
            &p.state_dir.join(bottle_contract::layout::APPROVED_FILE),
        )
        .unwrap_or_default(),
        journal: crate::live::apply::journaled(&p.state_dir),
        bundle: watch::recorded(&p.state_dir),
    };
    let text = crate::audit::collect::ledger(&run, logs, &host, &key, last);
    crate::audit::collect::write(&p.state_dir, &text)
        .map_err(|e| format!("{}: {e}", p.state_dir.display()))
}

/// Whether `r` is an interrupt.
fn is_interrupt<T>(r: &Result<T, LaunchError>) -> bool {
    matches!(r, Err(LaunchError::Interrupted(_)))
}

#[cfg(test)]
mod tests {
    //! The launch sequence against a fake driver: a signal in any phase, or a phase that
    //! fails, leaves nothing of the bottle behind.

    use super::*;
    use crate::run::driver::{BoxFuture, Part, Started};
    use crate::run::launch::LEDGER_SEAL_EVERY;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    /// The phases the fake goes through, in order; each but `probe` makes something.
    const PHASES: [&str; 5] = ["probe", "network", "bundle", "agent", "attach"];

    /// What to do on reaching a phase.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Fault {
        /// Nothing.
        None,
        /// Wait forever there, after telling the test (which then sends the "signal").
        Stall(&'static str),
        /// Fail there, after making what that phase makes.
        Fail(&'static str),
    }

    /// A driver whose "engine" is a list of what exists.
    struct Fake {
        fault: Fault,
        made: Mutex<Vec<&'static str>>,
        downs: Mutex<Vec<bool>>,
        reached: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    }

    impl Fake {
        fn new(fault: Fault) -> (Fake, Interrupt) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let fake = Fake {
                fault,
                made: Mutex::default(),
                downs: Mutex::default(),
                reached: Mutex::new(Some(tx)),
            };
            let stop = Interrupt::when(async move {
                match rx.await {
                    Ok(()) => "SIGINT",
                    Err(_) => std::future::pending().await,
                }
            });
            (fake, stop)
        }

        async fn phase(&self, name: &'static str) -> Result<(), LaunchError> {
            if name != "probe" {
                self.made.lock().unwrap().push(name);
            }
            match self.fault {
                Fault::Stall(at) if at == name => {
                    if let Some(tx) = self.reached.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    std::future::pending().await
                }
                Fault::Fail(at) if at == name => {
                    Err(LaunchError::Unsupported(format!("{name} failed")))
                }
                _ => Ok(()),
            }
        }
    }

    struct FakeStarted<'a>(&'a Fake);

    impl<'a> Started<'a> for FakeStarted<'a> {
        fn report(&self) -> Option<verify::Report> {
            None
        }

        fn attach(self: Box<Self>) -> BoxFuture<'a, Result<i64, LaunchError>> {
            Box::pin(async move { self.0.phase("attach").await.map(|()| 7) })
        }
    }

    impl Driver for Fake {
        fn name(&self) -> &str {
            "fake"
        }

        fn probe<'a>(&'a self, _: &'a str, _: &'a Path) -> BoxFuture<'a, Result<(), LaunchError>> {
            Box::pin(self.phase("probe"))
        }

        fn up<'a>(
            &'a self,
            _: &'a Launch<'a>,
        ) -> BoxFuture<'a, Result<Box<dyn Started<'a> + 'a>, LaunchError>> {
            Box::pin(async move {
                for phase in ["network", "bundle", "agent"] {
                    self.phase(phase).await?;
                }
                let started: Box<dyn Started<'a> + 'a> = Box::new(FakeStarted(self));
                Ok(started)
            })
        }

        fn logs<'a>(
            &'a self,
            _: &'a str,
            _: &'a Path,
        ) -> BoxFuture<'a, Result<String, LaunchError>> {
            Box::pin(async { Ok(String::new()) })
        }

        fn down<'a>(
            &'a self,
            _: &'a str,
            t: Teardown<'a>,
        ) -> BoxFuture<'a, Result<(), LaunchError>> {
            Box::pin(async move {
                self.made.lock().unwrap().clear();
                self.downs.lock().unwrap().push(t.after_interrupt);
                Ok(())
            })
        }

        fn list<'a>(&'a self, _: &'a Path) -> BoxFuture<'a, Result<Vec<Part>, LaunchError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// `agents/researcher.yaml` planned into a fresh state root under `dir`, with the
    /// built-in plugins, as `bottle run` plans it; and the options of a run.
    fn planned(dir: &Path) -> (Prepared, LaunchOptions) {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let env = crate::hostenv::HostEnv::from_vars([
            ("HOME".to_owned(), dir.join("home").display().to_string()),
            // Compiled plugins are shared between tests (and runs): compiling is the slow part.
            (
                "XDG_CACHE_HOME".to_owned(),
                workspace
                    .join("target/unit-test-cache")
                    .display()
                    .to_string(),
            ),
        ]);
        let manifest =
            crate::plan::manifest::load(&workspace.join("agents/researcher.yaml"), &env).unwrap();
        let plugins =
            crate::plugin::discover(&crate::plugin::PluginHost::for_env(&env), &[]).unwrap();
        let req = crate::plan::prepare::RunRequest {
            manifest,
            backend: None,
            grants: Default::default(),
            cwd: dir.to_owned(),
            state_root: dir.join("state"),
            dry_run: false,
            slug: None,
            pipelock: false,
            pipelock_note: None,
            docker_socket: None,
            protected: Vec::new(),
            plugin_dirs: Vec::new(),
            approved: Default::default(),
        };
        let prepared = crate::plan::prepare::prepare(&plugins, &req).unwrap();
        let options = LaunchOptions {
            command: None,
            keep_state: false,
            health_timeout: Duration::from_secs(5),
            base_image: String::new(),
            verify: verify::Mode::Off,
            phases: Default::default(),
            env,
            ledger_seal_every: LEDGER_SEAL_EVERY,
            config: Default::default(),
        };
        (prepared, options)
    }

    /// Launch researcher on a fake with `fault`: the launch's result and the fake after it.
    fn launch_with(fault: Fault) -> (Result<Outcome, LaunchError>, Fake, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (p, opts) = planned(dir.path());
        let (fake, stop) = Fake::new(fault);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(launch_until(&p, &opts, &fake, stop));
        (result, fake, dir)
    }

    #[test]
    fn a_signal_in_any_phase_tears_down_everything_made() {
        for phase in PHASES {
            let (result, fake, _dir) = launch_with(Fault::Stall(phase));
            assert!(
                matches!(result, Err(LaunchError::Interrupted("SIGINT"))),
                "{phase}: {result:?}"
            );
            assert!(fake.made.lock().unwrap().is_empty(), "{phase}: left behind");
            // Before the probe answered, the slug is not the run's: nothing is torn down.
            let expected: &[bool] = if phase == "probe" { &[] } else { &[true] };
            assert_eq!(*fake.downs.lock().unwrap(), expected, "{phase}");
        }
    }

    #[test]
    fn a_failing_phase_tears_down_what_exists_and_keeps_the_state() {
        for phase in PHASES {
            let (result, fake, dir) = launch_with(Fault::Fail(phase));
            let err = result.expect_err(phase).to_string();
            assert_eq!(err, format!("{phase} failed"));
            assert!(fake.made.lock().unwrap().is_empty(), "{phase}: left behind");
            let expected: &[bool] = if phase == "probe" { &[] } else { &[false] };
            assert_eq!(*fake.downs.lock().unwrap(), expected, "{phase}");
            // A failed run keeps its state dir for the user to look at.
            let kept = std::fs::read_dir(dir.path().join("state")).unwrap().count();
            assert!(kept >= 1, "{phase}: the state dir was not kept");
        }
    }

    #[test]
    fn a_run_that_ends_well_tears_down_once_and_retires_its_state() {
        let (result, fake, dir) = launch_with(Fault::None);
        let outcome = result.unwrap();
        assert_eq!(outcome.exit_code, 7);
        assert!(!outcome.state_kept);
        assert!(fake.made.lock().unwrap().is_empty());
        assert_eq!(*fake.downs.lock().unwrap(), [false]);
        // Only the kept logs and ledger remain under the state root.
        assert!(outcome.log_file.starts_with(dir.path().join("state")));
    }
}
