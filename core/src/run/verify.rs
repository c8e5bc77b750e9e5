//! `bottle verify`: the escape suite, run from inside a real bottle.
//!
//! The host brings the bottle up with the static probe (`bottle-probe`) mounted read-only in
//! the agent, starts a TCP listener of its own on the host's address on the bottle's egress
//! bridge (an address this bottle created), and runs the probe in the agent as the agent's
//! user. The probe tries every way out it knows and reports; the host adds what only it can
//! see (whether anything reached its listener). Any FAIL means the box leaks.

mod rules;

use crate::plan::prepare::Prepared;
use crate::run::docker::project::ComposeFile;
use crate::run::docker::{DockerError, api, up};
use bollard::Docker;
use bottle_contract::layout;
pub use bottle_probe::{Finding, Plan, Target, Verdict};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
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
            // The probe ran as the agent's user: its words are shown, never acted on.
            let safe = bottle_contract::terminal::safe;
            out.push_str(&format!(
                "{verdict}  {:<18} {}: {}\n",
                safe(&f.probe),
                safe(&f.tried),
                safe(&f.happened)
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
    crate::run::docker::images::install_program(
        state_dir,
        "bottle-probe",
        crate::run::docker::images::PROBE_BINARY,
    )
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

/// Run the suite against the bottle `p`, which is up; the probe runs with `agent_env` on top
/// of the container's env, as the agent's commands do (its proxy URLs carry the hop token).
pub async fn run_suite(
    docker: &Docker,
    file: &ComposeFile,
    p: &Prepared,
    agent_container: &str,
    agent_env: &[String],
) -> Result<Report, DockerError> {
    let project = &p.plan.deployment.project;
    let agent = file
        .services
        .get(layout::AGENT_SERVICE)
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
    let bundle = match file.services.get(layout::BUNDLE_SERVICE) {
        // The agent on no network reaches the bundle in its own namespace alone.
        Some(_) if agent_nets.is_empty() => {
            Some(crate::run::docker::handoff::Wiring::bundle_address())
        }
        Some(s) => {
            let name = up::container_name(project, layout::BUNDLE_SERVICE, s);
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
    let (ruled, rules_skipped) = rules::probes(&p.manifest);
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
        ruled,
    };
    let plan_json = serde_json::to_string(&plan).map_err(|e| DockerError::Host(e.to_string()))?;
    let ran = tokio::time::timeout(
        PROBE_TIMEOUT,
        exec_probe(
            docker,
            agent_container,
            &[up::PROBE_IN_AGENT.to_owned(), plan_json],
            agent_env,
        ),
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
            bottle_contract::terminal::safe(stdout.trim()),
            bottle_contract::terminal::safe(stderr.trim())
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
    findings.extend(rules_skipped);
    findings.extend(hops_from_outside(docker, file, p).await?);
    findings.extend(workdir_plants(p));
    // The plants are the suite's, not the agent's work: out of its layer before any merge.
    let _ = exec_probe(
        docker,
        agent_container,
        &[
            up::PROBE_IN_AGENT.to_owned(),
            "--clean".to_owned(),
            p.plan.stack.agent.workdir.clone(),
        ],
        &[],
    )
    .await;
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
    for c in crate::run::docker::inventory::containers(docker, None).await? {
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

/// The bundle's daemons tried from the host, as any local process (another user, another
/// container) could: at the bundle's address on a network that is not internal, without the
/// hop token. Each must refuse: egress 407, git-gate `ERR`, supervise 401.
async fn hops_from_outside(
    docker: &Docker,
    file: &ComposeFile,
    p: &Prepared,
) -> Result<Vec<Finding>, DockerError> {
    let Some(bundle) = file.services.get(layout::BUNDLE_SERVICE) else {
        return Ok(vec![]);
    };
    let name = up::container_name(&p.plan.deployment.project, layout::BUNDLE_SERVICE, bundle);
    let outside = bundle
        .networks
        .keys()
        .filter_map(|k| file.networks.get(k))
        .find(|n| !n.internal)
        .map(|n| n.name.clone());
    let Some(net) = outside else {
        return Ok(vec![Finding::skip(
            "hop-from-outside",
            "reach the bundle's daemons from the host without the hop token",
            "the bundle is on no network the host reaches",
        )]);
    };
    let Some(ip) = up::address_on(docker, &name, &net).await? else {
        return Ok(vec![Finding::skip(
            "hop-from-outside",
            "reach the bundle's daemons from the host without the hop token",
            format!("the bundle has no address on network {net}"),
        )]);
    };
    let mut out = Vec::new();
    for d in &p.plan.stack.bundle {
        let Some(port) = d.daemon.ports.first().copied() else {
            continue;
        };
        let addr = SocketAddr::new(ip, port);
        let finding = match d.plugin.as_str() {
            "egress" => {
                let host = p
                    .manifest
                    .allowed_hosts()
                    .into_iter()
                    .find(|h| !h.starts_with("*."))
                    .unwrap_or_else(|| "example.com".into());
                let req = format!(
                    "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                );
                let answer = host_exchange(addr, req.into_bytes()).await;
                let status = answer.as_deref().map(http_status);
                Finding::new(
                    "hop-egress",
                    format!(
                        "proxy GET http://{host}/ through egress at {addr} from the host, without the hop token"
                    ),
                    describe(&answer),
                    matches!(status, Ok(Some(407))) || answer.is_err(),
                )
            }
            "git-gate" => {
                let repo = p.manifest.git.first().map_or("x", |g| g.name.as_str());
                let line = format!("git-upload-pack /{repo}.git\0host=git-gate\0");
                let req = format!("{:04x}{line}", line.len() + 4);
                let answer = host_exchange(addr, req.into_bytes()).await;
                let refused = answer.as_deref().map(|a| a.get(4..7) == Some("ERR"));
                Finding::new(
                    "hop-git-gate",
                    format!(
                        "ls-remote {repo} from git-gate at {addr} from the host, without the hop token"
                    ),
                    describe(&answer),
                    matches!(refused, Ok(true)) || answer.is_err(),
                )
            }
            "supervise" => {
                let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"bottle-verify","version":"1"}}}"#;
                let req = format!(
                    "POST / HTTP/1.1\r\nHost: supervise:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let answer = host_exchange(addr, req.into_bytes()).await;
                let status = answer.as_deref().map(http_status);
                Finding::new(
                    "hop-supervise",
                    format!(
                        "MCP initialize to supervise at {addr} from the host, without the hop token"
                    ),
                    describe(&answer),
                    matches!(status, Ok(Some(401))) || answer.is_err(),
                )
            }
            _ => continue,
        };
        out.push(finding);
    }
    Ok(out)
}

/// What a host-side exchange came to, in words: `no answer: …`, or `answered <first line>`
/// (the bundle's text, without controls).
fn describe(answer: &Result<String, String>) -> String {
    match answer {
        Err(e) => format!("no answer: {e}"),
        Ok(a) => format!(
            "answered {}",
            bottle_contract::supervise::validate::text(a.lines().next().unwrap_or(""), 120)
        ),
    }
}

/// The status code of an HTTP answer, if it has one.
fn http_status(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Send `req` to `addr` from the host and read the answer (at most 8 KiB, 5 s).
async fn host_exchange(addr: SocketAddr, req: Vec<u8>) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&req).await?;
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        while got < buf.len() {
            match s.read(&mut buf[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..got]).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), talk).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// What the probe planted in the working dir ([`bottle_probe::PLANTS`]), judged from the host:
/// your dir must not have it while the bottle runs, and the merge at the end must keep it out.
fn workdir_plants(p: &Prepared) -> Vec<Finding> {
    use crate::plan::workdir::{guarded, layer::Layer, merge};
    let Ok(Some(layer)) = Layer::load(&p.state_dir) else {
        return vec![Finding::skip(
            "workdir",
            "plant what your git would run in the working dir",
            "the agent has no dir of yours (cwd: copy or none)",
        )];
    };
    let repo = layer.lower.join(".git").is_dir();
    let upper = layer.upper();
    let g = guarded::guarded(&layer.lower, None);
    let steps = merge::plan(&merge::Inputs {
        upper: &upper,
        lower: &layer.lower,
        started: layer.started,
        guarded: &g,
    });
    let mut out = Vec::new();
    for plant in bottle_probe::PLANTS {
        let tried = format!(
            "the agent plants {}; your git must never see it",
            plant.what
        );
        if plant.in_repo && !repo {
            out.push(Finding::skip(plant.id, tried, "your dir is no git repo"));
            continue;
        }
        let yours = layer.lower.join(plant.path);
        let in_your_dir = if plant.path == ".git/config" {
            std::fs::read_to_string(&yours).is_ok_and(|t| t.contains(bottle_probe::PLANTED_MARK))
        } else {
            std::fs::symlink_metadata(&yours).is_ok()
        };
        let planted = Path::new(plant.path);
        let verdict = match &steps {
            Err(e) => Err(format!("the merge could not read the layer: {e}")),
            Ok(steps) => {
                let brought = steps.iter().any(|s| {
                    matches!(s, merge::Step::Write(_) | merge::Step::Link(_))
                        && (s.path().starts_with(planted) || planted.starts_with(s.path()))
                });
                let kept_out = steps.iter().any(|s| {
                    matches!(s, merge::Step::SetAside(..)) && planted.starts_with(s.path())
                });
                Ok(!brought && (kept_out || !upper.join(plant.path).exists()))
            }
        };
        out.push(match (in_your_dir, verdict) {
            (true, _) => Finding::new(plant.id, tried, "it is in your dir during the run", false),
            (false, Err(e)) => Finding::new(plant.id, tried, e, false),
            (false, Ok(false)) => Finding::new(
                plant.id,
                tried,
                "the merge would bring it into your dir",
                false,
            ),
            (false, Ok(true)) => Finding::new(
                plant.id,
                tried,
                "not in your dir during the run; kept out by the merge",
                true,
            ),
        });
    }
    out
}

/// A DNS label nobody has asked for before: the slug and the time.
fn fresh_label(slug: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("leak-{slug}-{nanos:x}")
}

/// Run the probe (`cmd`) in the agent container as the agent's user, with `env` on top of
/// the container's; its stdout and stderr.
async fn exec_probe(
    docker: &Docker,
    container: &str,
    cmd: &[String],
    env: &[String],
) -> Result<(String, String), DockerError> {
    up::exec_in(docker, container, cmd, env)
        .await
        .map(|o| (o.stdout, o.stderr))
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
