//! `bottle verify`: the escape suite, run from inside a real bottle.
//!
//! The host brings the bottle up with the static probe (`bottle-probe`) mounted read-only in
//! the agent, starts a TCP listener of its own on the host's address on the bottle's egress
//! bridge (an address this bottle created), and runs the probe in the agent as the agent's
//! user. The probe tries every way out it knows and reports; the host adds what only it can
//! see (whether anything reached its listener). Any FAIL means the box leaks.

use crate::docker::project::ComposeFile;
use crate::docker::{DockerError, api, up};
use crate::prepare::Prepared;
use bollard::Docker;
pub use bottle_probe::{Finding, Plan, Target, Verdict};
use futures_util::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long the probe may run in all (the bundle port scan is most of it).
const PROBE_TIMEOUT: Duration = Duration::from_secs(240);

/// Whether and when a launch runs the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not at all.
    #[default]
    Off,
    /// `bottle verify`: run it, tear down, report.
    Only,
    /// `bottle run --verify`: run it, and hand the terminal over only if everything held.
    First,
}

/// The suite's findings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The bottle's slug.
    pub slug: String,
    /// One per probe, in the order they ran.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing escaped.
    pub fn held(&self) -> bool {
        self.findings.iter().all(|f| f.verdict != Verdict::Fail)
    }

    /// How many probes failed.
    pub fn failures(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .count()
    }

    /// One line per probe, then a closing line.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let verdict = match f.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "SKIP",
            };
            out.push_str(&format!(
                "{verdict}  {:<18} {}: {}\n",
                f.probe, f.tried, f.happened
            ));
        }
        let skipped = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Skip)
            .count();
        out.push_str(&format!(
            "bottle {}: {} probes, {} failed, {skipped} skipped: {}\n",
            self.slug,
            self.findings.len(),
            self.failures(),
            if self.held() {
                "the box held"
            } else {
                "THE BOX LEAKS"
            }
        ));
        out
    }
}

/// The probe's host file, written into the state dir for the agent's read-only mount.
pub fn install_probe(state_dir: &std::path::Path) -> Result<std::path::PathBuf, DockerError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = state_dir.join("bin");
    let path = dir.join("bottle-probe");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&path, crate::docker::images::PROBE_BINARY)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    };
    write().map_err(|e| {
        DockerError::Host(format!(
            "cannot write the probe to {}: {e}; check the state dir's permissions",
            path.display()
        ))
    })?;
    Ok(path)
}

/// A listener the suite owns: counts who connects.
struct Listener {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start(ip: IpAddr) -> Result<Listener, DockerError> {
        let socket = tokio::net::TcpListener::bind((ip, 0)).await.map_err(|e| {
            DockerError::Host(format!(
                "cannot listen on {ip}, the host's address on the bottle's egress bridge: {e}"
            ))
        })?;
        let addr = socket
            .local_addr()
            .map_err(|e| DockerError::Host(e.to_string()))?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((_, _)) = socket.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Listener { addr, hits, task })
    }
}

/// The gateway of network `name` (the host's address on it, unless the bridge inhibits it).
async fn gateway(docker: &Docker, name: &str) -> Result<Option<IpAddr>, DockerError> {
    let net = docker
        .inspect_network(name, None)
        .await
        .map_err(api(format!("inspecting network {name}")))?;
    Ok(net
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse().ok())
        .find(IpAddr::is_ipv4))
}

/// Run the suite against the bottle `p`, which is up.
pub async fn run_suite(
    docker: &Docker,
    file: &ComposeFile,
    p: &Prepared,
    agent_container: &str,
) -> Result<Report, DockerError> {
    let project = &p.plan.deployment.project;
    let agent = file
        .services
        .get("agent")
        .ok_or_else(|| DockerError::Host("the compose file has no agent".into()))?;
    let agent_nets: Vec<&str> = agent
        .networks
        .keys()
        .filter_map(|k| file.networks.get(k).map(|n| n.name.as_str()))
        .collect();
    // The host's address on a network the agent is not on (the bundle's way out).
    let mut outside = None;
    for n in file.networks.values() {
        if !agent_nets.contains(&n.name.as_str()) && !n.internal {
            outside = gateway(docker, &n.name).await?;
            if outside.is_some() {
                break;
            }
        }
    }
    let listener = match outside {
        Some(ip) => Some(Listener::start(ip).await?),
        None => None,
    };
    let mut listeners = Vec::new();
    if let Some(l) = &listener {
        listeners.push(Target {
            what: "the host, on the bottle's egress bridge".into(),
            addr: l.addr,
        });
        for n in &agent_nets {
            if let Some(gw) = gateway(docker, n).await? {
                listeners.push(Target {
                    what: format!("the gateway of the agent's network {n}"),
                    addr: SocketAddr::new(gw, l.addr.port()),
                });
            }
        }
    }
    let bundle = match file.services.get("sidecars") {
        Some(s) => {
            let name = up::container_name(project, "sidecars", s);
            let info = docker
                .inspect_container(&name, None)
                .await
                .map_err(api(format!("inspecting {name}")))?;
            info.network_settings
                .and_then(|n| n.networks)
                .and_then(|nets| {
                    agent_nets
                        .iter()
                        .find_map(|n| nets.get(*n)?.ip_address.clone())
                })
                .and_then(|ip| ip.parse().ok())
        }
        None => None,
    };
    let others = other_bottles(docker, &p.slug).await?;
    let mut declared_ports: Vec<u16> = p
        .plan
        .stack
        .bundle
        .iter()
        .flat_map(|d| d.daemon.ports.iter().copied())
        .collect();
    declared_ports.sort_unstable();
    declared_ports.dedup();
    let env = &p.plan.stack.agent.env;
    let proxy = env.get("HTTPS_PROXY").map(|u| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    });
    let plan = Plan {
        workdir: p.plan.stack.agent.workdir.clone(),
        root_granted: p.confinement.root_granted,
        listeners,
        others,
        bundle,
        declared_ports,
        proxy,
        dns_name: format!("{}.bottle-verify.example", fresh_label(&p.slug)),
        allowed_host: p
            .manifest
            .allowed_hosts()
            .into_iter()
            .find(|h| !h.starts_with("*.")),
        ca_bundle: env.get("SSL_CERT_FILE").cloned(),
    };
    let plan_json = serde_json::to_string(&plan).map_err(|e| DockerError::Host(e.to_string()))?;
    let ran = tokio::time::timeout(
        PROBE_TIMEOUT,
        exec_probe(docker, agent_container, &plan_json),
    )
    .await;
    if let Some(l) = &listener {
        l.task.abort();
    }
    let (stdout, stderr) = ran.map_err(|_| {
        DockerError::Host(format!(
            "the probe ran for more than {PROBE_TIMEOUT:?} in {agent_container}; its container is kept in the logs"
        ))
    })??;
    let mut findings: Vec<Finding> = serde_json::from_str(stdout.trim()).map_err(|e| {
        DockerError::Host(format!(
            "the probe's report is not readable ({e}); it printed: {}{}",
            stdout.trim(),
            stderr.trim()
        ))
    })?;
    if let Some(l) = &listener {
        let hits = l.hits.load(Ordering::SeqCst);
        findings.push(Finding::new(
            "listener-hits",
            format!("reach the suite's listener {} by any path", l.addr),
            format!("{hits} connection(s) arrived"),
            hits == 0,
        ));
    }
    Ok(Report {
        slug: p.slug.clone(),
        findings,
    })
}

/// The port every bundle serves the agent on (egress's).
const BUNDLE_PORT: u16 = 9099;

/// Every address of another running bottle's containers: the agent must not reach any of them
/// (at the bundle's egress port, which is open to that bottle's own agent).
async fn other_bottles(docker: &Docker, slug: &str) -> Result<Vec<Target>, DockerError> {
    let mut out = Vec::new();
    for c in crate::docker::inventory::containers(docker, None).await? {
        if c.slug == slug || c.state != "running" {
            continue;
        }
        let Ok(info) = docker.inspect_container(&c.name, None).await else {
            continue; // gone since the listing
        };
        let nets = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for (net, e) in nets {
            if let Some(ip) = e.ip_address.and_then(|ip| ip.parse::<IpAddr>().ok()) {
                out.push(Target {
                    what: format!("another bottle's container {} on {net}", c.name),
                    addr: SocketAddr::new(ip, BUNDLE_PORT),
                });
            }
        }
    }
    Ok(out)
}

/// A DNS label nobody has asked for before: the slug and the time.
fn fresh_label(slug: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("leak-{slug}-{nanos:x}")
}

/// Run the probe in the agent container as the agent's user; its stdout and stderr.
async fn exec_probe(
    docker: &Docker,
    container: &str,
    plan_json: &str,
) -> Result<(String, String), DockerError> {
    let exec = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec![up::PROBE_IN_AGENT.to_owned(), plan_json.to_owned()]),
                ..Default::default()
            },
        )
        .await
        .map_err(api(format!("running the probe in {container}")))?;
    let (mut out, mut err) = (String::new(), String::new());
    if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            match chunk {
                bollard::container::LogOutput::StdOut { message } => {
                    out.push_str(&String::from_utf8_lossy(&message));
                }
                other => err.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
    }
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_fails_on_any_fail_and_says_so() {
        let mut r = Report {
            slug: "x-1".into(),
            findings: vec![
                Finding::new("uid", "t", "uid 1000", true),
                Finding::skip("git-hooks", "t", "no .git"),
            ],
        };
        assert!(r.held());
        assert!(r.lines().contains("the box held"), "{}", r.lines());
        r.findings
            .push(Finding::new("raw-socket", "t", "opened", false));
        assert!(!r.held());
        assert_eq!(r.failures(), 1);
        let text = r.lines();
        assert!(text.contains("FAIL  raw-socket"), "{text}");
        assert!(
            text.contains("3 probes, 1 failed, 1 skipped: THE BOX LEAKS"),
            "{text}"
        );
    }
}
