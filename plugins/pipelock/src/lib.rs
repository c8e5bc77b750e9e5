//! pipelock: the egress firewall and DLP forward proxy, always present.
//!
//! Renders pipelock 2.3.0's config with only keys it accepts (it rejects unknown ones): strict
//! mode, an `api_allowlist` of the bottle's allowlist (the manifest's hosts and, unless turned
//! off, bottle's defaults) and every route host (never a git/SSH host: git-gate reaches SSH
//! directly), the forward proxy on, and TLS interception with a per-bottle CA whose
//! in-container paths are fixed.

use bottle_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// In-container dir of the config: a directory mount, so a config rewritten by rename (live
/// apply) is seen; a single-file bind mount keeps the old inode forever.
pub const CONFIG_DIR: &str = "/etc/pipelock";
/// In-container path of the config.
pub const CONFIG_IN_CONTAINER: &str = "/etc/pipelock/pipelock.yaml";
/// In-container path of the CA certificate.
pub const CA_CERT_IN_CONTAINER: &str = "/etc/pipelock-ca.pem";
/// In-container path of the CA key (SEC1 `EC PRIVATE KEY`; pipelock refuses PKCS#8).
pub const CA_KEY_IN_CONTAINER: &str = "/etc/pipelock-ca-key.pem";
/// The hostname the agent and the other sidecars use.
pub const HOSTNAME: &str = "pipelock";
/// The proxy port.
pub const PORT: u16 = bottle_contract::ports::PIPELOCK;
/// The pinned upstream image the bundle copies the pipelock binary from.
pub const IMAGE: &str = "ghcr.io/luckypipewrench/pipelock:2.3.0";
/// Where the bundle image keeps the binary.
pub const BINARY: &str = "/usr/local/bin/pipelock";

/// `plugins.pipelock` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Turn TLS interception off (default: on).
    #[serde(default)]
    pub no_tls_interception: bool,
    /// Gone: the defaults are the manifest's now (`egress.default_allowlist`). Kept only to
    /// say so instead of "unknown field".
    #[serde(default)]
    no_default_allowlist: Option<serde::de::IgnoredAny>,
    /// In-container CA certificate path, instead of the minted one. Needs `ca_key` too.
    pub ca_cert: Option<String>,
    /// In-container CA key path, instead of the minted one. Needs `ca_cert` too.
    pub ca_key: Option<String>,
}

/// The config file, field for field as pipelock 2.3.0 names them.
#[derive(Debug, Serialize)]
pub struct Config {
    version: u32,
    mode: &'static str,
    enforce: bool,
    api_allowlist: Vec<String>,
    forward_proxy: ForwardProxy,
    dlp: Dlp,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_interception: Option<TlsInterception>,
}

#[derive(Debug, Serialize)]
struct ForwardProxy {
    enabled: bool,
}

#[derive(Debug, Serialize)]
struct Dlp {
    include_defaults: bool,
    scan_env: bool,
}

#[derive(Debug, Serialize)]
struct TlsInterception {
    enabled: bool,
    ca_cert: String,
    ca_key: String,
}

/// Where the CA comes from, decided once from the settings.
enum Ca {
    Off,
    Minted,
    Given { cert: String, key: String },
}

fn ca(settings: &Settings) -> Result<Ca, PluginError> {
    match (
        &settings.ca_cert,
        &settings.ca_key,
        settings.no_tls_interception,
    ) {
        (Some(_), None, _) | (None, Some(_), _) => Err(PluginError::InvalidSettings(
            "plugins.pipelock: `ca_cert` and `ca_key` go together; set both or neither".into(),
        )),
        (_, _, true) => Ok(Ca::Off),
        (Some(cert), Some(key), false) => Ok(Ca::Given {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, false) => Ok(Ca::Minted),
    }
}

/// The allowlist: the bottle's allowlist and the route hosts, sorted, without repeats.
pub fn allowlist(bottle: &Bottle) -> Vec<String> {
    let all: std::collections::BTreeSet<String> = bottle
        .allowlist
        .iter()
        .chain(bottle.routes.iter().map(|r| &r.host))
        .map(|h| h.to_ascii_lowercase())
        .collect();
    all.into_iter().collect()
}

/// The rendered config.
pub fn config(bottle: &Bottle, settings: &Settings) -> Result<Config, PluginError> {
    let api_allowlist = allowlist(bottle);
    if api_allowlist.is_empty() {
        return Err(PluginError::Unsupported(
            "strict mode needs at least one allowed host; add `egress.allowlist` or drop `egress.default_allowlist: false`".into(),
        ));
    }
    let tls_interception = match ca(settings)? {
        Ca::Off => None,
        Ca::Minted => Some(TlsInterception {
            enabled: true,
            ca_cert: CA_CERT_IN_CONTAINER.into(),
            ca_key: CA_KEY_IN_CONTAINER.into(),
        }),
        Ca::Given { cert, key } => Some(TlsInterception {
            enabled: true,
            ca_cert: cert,
            ca_key: key,
        }),
    };
    Ok(Config {
        version: 1,
        mode: "strict",
        enforce: true,
        api_allowlist,
        forward_proxy: ForwardProxy { enabled: true },
        dlp: Dlp {
            include_defaults: true,
            scan_env: true,
        },
        tls_interception,
    })
}

/// The plugin.
pub struct Pipelock;

impl Sidecar for Pipelock {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "pipelock".into(),
            kind: PluginKind::Sidecar,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "egress firewall and DLP proxy (strict hostname allowlist, TLS interception)"
                .into(),
        }
    }

    fn prepare(bottle: &Bottle, settings: &Settings) -> Result<Plan, PluginError> {
        if settings.no_default_allowlist.is_some() {
            return Err(PluginError::InvalidSettings(
                "`no_default_allowlist` moved: remove it from `plugins.pipelock` and write `egress: {default_allowlist: false}`".into(),
            ));
        }
        let config = config(bottle, settings)?;
        let yaml =
            serde_yaml::to_string(&config).map_err(|e| PluginError::Internal(e.to_string()))?;
        let minted = matches!(ca(settings)?, Ca::Minted);
        Ok(Plan {
            files: vec![StagedFile {
                path: "pipelock/pipelock.yaml".into(),
                contents: yaml,
                mode: 0o600,
            }],
            cas: if minted {
                vec![CaRequest {
                    id: "pipelock".into(),
                    common_name: format!("bottle pipelock CA {}", bottle.slug),
                    combined_pem: false,
                    // egress is always in front: the agent only ever sees egress's certificates.
                    trusted_by_agent: false,
                }]
            } else {
                vec![]
            },
            // Only egress reaches pipelock, over the bundle's loopback: an agent that could
            // reach it directly would skip egress's rules.
            provides: vec![Endpoint {
                name: "bundle-proxy".into(),
                url: format!("http://127.0.0.1:{PORT}"),
                priority: 10,
            }],
            ..Plan::default()
        })
    }

    fn render(ctx: &RenderContext, _settings: &Settings) -> Result<Fragment, PluginError> {
        let mut mounts = vec![Mount::state_ro("pipelock", CONFIG_DIR)];
        if let Some(ca) = ctx.cas.iter().find(|c| c.id == "pipelock") {
            mounts.push(Mount::state_ro(ca.cert.clone(), CA_CERT_IN_CONTAINER));
            mounts.push(Mount::state_ro(ca.key.clone(), CA_KEY_IN_CONTAINER));
        }
        Ok(Fragment {
            daemons: vec![Daemon {
                name: HOSTNAME.into(),
                command: vec![
                    BINARY.into(),
                    "run".into(),
                    "--config".into(),
                    CONFIG_IN_CONTAINER.into(),
                    "--listen".into(),
                    format!("127.0.0.1:{PORT}"),
                ],
                mounts,
                ports: vec![PORT],
                ready_check: Some(vec![BINARY.into(), "healthcheck".into()]),
                ..Daemon::default()
            }],
            ..Fragment::default()
        })
    }
}

bottle_plugin_sdk::export!(sidecar Pipelock);

#[cfg(test)]
mod tests;
