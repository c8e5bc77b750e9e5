//! The original system's behaviour checklist (`original-system.md`, section d), one assertion per
//! numbered item that a rendered plan can show. Items shown only by a real launch (orphan probe
//! 11-13, key modes 34-36, teardown 41, exit code 55) are in `docker_e2e.rs`.

use crate::support::{Sandbox, run};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

struct Rendered {
    plan: Json,
    compose: Yaml,
    compose_text: String,
    state: std::path::PathBuf,
    _sandbox: Sandbox,
}

fn render(agent: &str, backend: &str) -> Rendered {
    let sb = Sandbox::new();
    let (code, json, err) =
        run(sb
            .bottle()
            .args(["run", agent, "--dry-run", "--json", "--backend", backend]));
    assert_eq!(code, 0, "{err}");
    let plan: Json = serde_json::from_str(&json).unwrap();
    let state = std::path::PathBuf::from(plan["state_dir"].as_str().unwrap());
    let main = if backend == "docker" {
        "compose.yaml"
    } else {
        "bundle.compose.yaml"
    };
    let compose_text = std::fs::read_to_string(state.join(main)).unwrap();
    Rendered {
        compose: serde_yaml::from_str(&compose_text).unwrap(),
        compose_text,
        plan,
        state,
        _sandbox: sb,
    }
}

fn aliases(r: &Rendered, network: &str) -> Vec<String> {
    r.compose["services"]["sidecars"]["networks"][network]["aliases"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn items_1_to_5_short_hostnames_and_no_long_names() {
    let r = render("implementer", "docker");
    let slug = r.plan["slug"].as_str().unwrap();
    let a = aliases(&r, "internal");
    for host in ["pipelock", "egress", "git-gate", "supervise"] {
        assert!(
            a.contains(&host.to_owned()),
            "{host} is a bundle alias: {a:?}"
        );
    }
    for long in ["pipelock", "egress", "git-gate", "supervise"] {
        assert!(
            !r.compose_text.contains(&format!("bottle-{long}-{slug}")),
            "no per-sidecar container name for {long}"
        );
    }
}

#[test]
fn items_6_to_8_egress_reaches_pipelock_over_bundle_loopback_on_both_backends() {
    for agent in ["implementer", "researcher"] {
        let r = render(agent, "docker");
        let daemons: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(r.state.join("bundle/daemons.json")).unwrap(),
        )
        .unwrap();
        let egress = daemons["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "egress")
            .expect("egress is in every bundle");
        let command: Vec<&str> = egress["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            command
                .windows(2)
                .any(|w| w == ["--upstream", "http://127.0.0.1:8888"]),
            "{agent}: {command:?}"
        );
    }
}

#[test]
fn item_9_the_agent_proxy_is_egress_with_or_without_routes() {
    for agent in ["implementer", "researcher"] {
        let r = render(agent, "docker");
        let env = &r.compose["services"]["agent"]["environment"];
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(env[k], "http://egress:9099", "{agent} {k}");
        }
    }
}

/// The original rewrote to `git://git-gate/<repo>.git`; the repo path now starts with the
/// run's hop token (its placeholder in the plan), which git-gate asks of every request.
#[test]
fn item_10_git_rewrites_go_to_git_gate() {
    let r = render("implementer", "docker");
    let gitconfig = std::fs::read_to_string(r.state.join("agent/gitconfig")).unwrap();
    assert!(
        gitconfig.contains(
            "[url \"git://git-gate/@BOTTLE_HOP_TOKEN@/bottle.git\"]\n\tinsteadOf = git@github.com:example/bottle.git"
        ),
        "{gitconfig}"
    );
}

#[test]
fn items_15_to_17_ca_paths_are_fixed_and_backend_neutral() {
    for backend in ["docker", "smolmachines"] {
        let r = render("implementer", backend);
        let volumes = crate::support::bundle_volumes(&r.compose, &r.state);
        let targets: Vec<&str> = volumes
            .iter()
            .map(|v| v["target"].as_str().unwrap())
            .collect();
        assert!(
            targets.contains(&"/etc/pipelock-ca.pem")
                && targets.contains(&"/etc/pipelock-ca-key.pem"),
            "{backend}: {targets:?}"
        );
        let config = std::fs::read_to_string(r.state.join("pipelock/pipelock.yaml")).unwrap();
        assert!(
            config.contains("ca_cert: /etc/pipelock-ca.pem")
                && config.contains("ca_key: /etc/pipelock-ca-key.pem")
        );
    }
}

#[test]
fn items_23_to_25_and_33_one_project_rendered_into_the_state_dir_and_recorded() {
    let r = render("implementer", "docker");
    let slug = r.plan["slug"].as_str().unwrap();
    assert_eq!(
        r.plan["plan"]["deployment"]["project"],
        format!("bottle-{slug}")
    );
    assert!(r.state.join("compose.yaml").is_file());
    assert_eq!(
        r.plan["metadata"]["compose_project"],
        format!("bottle-{slug}")
    );
}

#[test]
fn item_28_an_internal_network_without_gateway_and_a_separate_bridge() {
    let r = render("implementer", "docker");
    assert_eq!(r.compose["networks"]["internal"]["internal"], true);
    // The way out: the bridge every bundle shares (made by the host, members kept apart), a
    // separate bridge from the agent's all the same.
    assert_eq!(r.compose["networks"]["egress"]["external"], true);
    assert_eq!(
        r.compose["networks"]["egress"]["name"],
        bottle_contract::compose::SHARED_EGRESS_NETWORK
    );
    assert!(r.compose["networks"]["egress"]["internal"].is_null());
    assert_eq!(
        r.compose["services"]["agent"]["networks"]
            .as_mapping()
            .unwrap()
            .len(),
        1,
        "the agent is on the internal network only"
    );
}

#[test]
fn item_32_the_agent_idles() {
    let r = render("implementer", "docker");
    assert_eq!(
        r.compose["services"]["agent"]["entrypoint"],
        serde_yaml::to_value(["sleep", "infinity"]).unwrap()
    );
}

#[test]
fn item_40_the_ssh_key_is_mounted_read_only_into_git_gate() {
    let r = render("implementer", "docker");
    let key = crate::support::bundle_volumes(&r.compose, &r.state)
        .into_iter()
        .find(|v| v["target"] == "/git-gate/creds/bottle/id")
        .unwrap();
    assert_eq!(key["read_only"], true);
    assert!(key["source"].as_str().unwrap().ends_with(".ssh/id_ed25519"));
}

#[test]
fn items_43_and_44_git_gate_only_with_git_and_pipelock_always() {
    let with = render("implementer", "docker");
    let without = render("researcher", "docker");
    let sidecars = |r: &Rendered| -> Vec<String> {
        r.plan["plan"]["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["plugin"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(sidecars(&with).contains(&"git-gate".to_owned()));
    assert!(!sidecars(&without).contains(&"git-gate".to_owned()));
    assert!(
        sidecars(&with).contains(&"pipelock".to_owned())
            && sidecars(&without).contains(&"pipelock".to_owned())
    );
}

#[test]
fn items_45_to_48_pipelock_config() {
    let r = render("implementer", "docker");
    let config: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(r.state.join("pipelock/pipelock.yaml")).unwrap(),
    )
    .unwrap();
    let hosts: Vec<&str> = config["api_allowlist"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        !hosts.contains(&"github.com"),
        "45: no host from the git/SSH upstream"
    );
    assert!(
        hosts.contains(&"api.anthropic.com") && hosts.contains(&"pypi.org"),
        "46: defaults and the manifest's list"
    );
    assert_eq!(
        config["tls_interception"]["enabled"], true,
        "47: both CA paths known"
    );
    // When egress is in use, pipelock's allowlist mirrors egress's host set: the agent's
    // traffic passes egress first, so a host missing there would be a 403 for the agent.
    let routes: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(r.state.join("egress/routes.yaml")).unwrap())
            .unwrap();
    let mut route_hosts: Vec<&str> = routes["routes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .collect();
    route_hosts.sort_unstable();
    let mut pipelock_hosts = hosts.clone();
    pipelock_hosts.sort_unstable();
    assert_eq!(route_hosts, pipelock_hosts);
}

#[test]
fn item_52_a_dry_run_mints_nothing() {
    let r = render("implementer", "docker");
    assert!(!r.state.join("ca").exists());
}

#[test]
fn item_57_the_proxy_port_is_8888() {
    let r = render("researcher", "docker");
    let bundle = r.plan["plan"]["stack"]["bundle"].as_array().unwrap();
    let pipelock = bundle
        .iter()
        .find(|d| d["daemon"]["name"] == "pipelock")
        .unwrap();
    assert_eq!(pipelock["daemon"]["ports"], serde_json::json!([8888]));
}

#[test]
fn supervise_is_registered_as_the_agents_mcp_server() {
    let r = render("implementer", "docker");
    let agent = &r.compose["services"]["agent"];
    assert_eq!(
        agent["environment"]["BOTTLE_MCP_CONFIG"],
        "/etc/bottle/mcp.json"
    );
    assert!(
        agent["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["target"] == "/etc/bottle/mcp.json" && v["read_only"] == true)
    );
    let mcp: Json =
        serde_json::from_str(&std::fs::read_to_string(r.state.join("agent/mcp.json")).unwrap())
            .unwrap();
    assert_eq!(
        mcp["mcpServers"]["supervise"],
        serde_json::json!({"type": "http", "url": "http://supervise:9100/",
            "headers": {"Authorization": "Bearer @BOTTLE_HOP_TOKEN@"}})
    );
    assert!(
        r.state.join("supervise/queue").is_dir(),
        "the host queue dir exists for the bind mount"
    );
    // Claude Code reads no env var for this: the example agent passes the file explicitly.
    let command: Vec<&str> = r.plan["plan"]["stack"]["agent"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command, ["claude", "--mcp-config", "/etc/bottle/mcp.json"]);
}
