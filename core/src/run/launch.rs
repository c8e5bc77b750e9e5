//! What the launch and every driver share: how a launch should behave, why it failed, and
//! the run's hop token with what the agent's commands get from it.

use crate::plan::prepare::Prepared;
use crate::run::docker::{DockerError, watch};
use crate::run::keys::KeyError;
use crate::run::verify;
use std::time::Duration;

/// How a launch should behave.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// A one-off command instead of the agent's default.
    pub command: Option<Vec<String>>,
    /// Keep the state dir even when the run succeeds.
    pub keep_state: bool,
    /// How long to wait for health checks.
    pub health_timeout: Duration,
    /// The base image of the bundle.
    pub base_image: String,
    /// Whether the escape suite runs (`bottle verify`, `bottle run --verify`).
    pub verify: verify::Mode,
    /// The run's clock (`-v` logs each phase).
    pub phases: std::sync::Arc<crate::run::phases::Phases>,
    /// The host env, for the secrets the bundle and the agent get at launch.
    pub env: crate::hostenv::HostEnv,
    /// How often the audit ledger is written and sealed while the agent runs (the final seal
    /// comes at teardown): a run that is killed still leaves its record up to there.
    pub ledger_seal_every: Duration,
    /// bottle's own settings (the address pool of its networks).
    pub config: crate::config::BottleConfig,
}

/// [`LaunchOptions::ledger_seal_every`] unless `BOTTLE_LEDGER_SEAL_SECS` says otherwise.
pub const LEDGER_SEAL_EVERY: Duration = Duration::from_secs(600);

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// Minting keys failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A native driver failed (its message is one line that says what to do).
    #[error(transparent)]
    Native(#[from] crate::run::driver::native::NativeError),
    /// The agent's layer over the working dir could not be made.
    #[error(transparent)]
    Layer(#[from] crate::plan::workdir::layer::LayerError),
    /// The state dir could not be written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The backend cannot be launched here.
    #[error("{0}")]
    Unsupported(String),
    /// Interrupted by a signal; teardown ran.
    #[error("interrupted by {0}; the bottle was torn down")]
    Interrupted(&'static str),
    /// The sidecar bundle kept dying during the run; teardown ran.
    #[error(transparent)]
    BundleLost(#[from] watch::BundleLost),
}

impl LaunchError {
    /// The exit code for this failure (128 + signal for interruptions).
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Interrupted("SIGINT") => 130,
            LaunchError::Interrupted(_) => 143,
            LaunchError::BundleLost(_) => watch::BUNDLE_LOST_EXIT,
            _ => 1,
        }
    }
}

/// The value of host env `name` for a secret: the user's env, but for the hop token, which is
/// the host's own (`hop`; empty on Docker, whose agent does not carry one yet).
pub(crate) fn host_value<'a>(
    env: &'a crate::hostenv::HostEnv,
    hop: &'a str,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        if name == bottle_contract::names::HOP_TOKEN_HOST_ENV {
            Some(hop.to_owned())
        } else {
            env.get(name).map(str::to_owned)
        }
    }
}

/// A fresh hop token: 32 random bytes, hex.
pub fn mint_hop_token() -> Result<String, LaunchError> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| LaunchError::Unsupported(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Run blocking `f` (a native driver call, which may spawn an engine for minutes) off the
/// async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LaunchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LaunchError::Unsupported(format!("a driver call did not finish: {e}")))
}

/// What each of the agent's commands gets in its env on top of the container's: its proxy
/// URLs carrying the hop token (never in the container's own config).
pub fn agent_hop_env(p: &Prepared, hop: &str) -> Vec<(String, String)> {
    bottle_contract::hop::proxy_env(
        p.plan
            .stack
            .agent
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        hop,
    )
}
