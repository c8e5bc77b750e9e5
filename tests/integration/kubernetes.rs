//! The kubernetes backend: what `bottle run --backend kubernetes` writes, checked against the
//! Kubernetes schemas with `kubernetes-validate` (PyPI, strict: unknown fields fail) and
//! against golden files; and the hand-over of a real run, with the state dir's files filled in
//! and no credential value anywhere.

use crate::support::{Sandbox, golden, run};
use std::path::Path;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.33.0";

/// `tests/data/k8s-validate.py` on `file`: every document must pass kubernetes-validate's
/// strict schemas (unknown fields and unknown kinds fail) and the API server's rules on names,
/// labels, port names and volumes.
fn validate(file: &Path) {
    let out = std::process::Command::new("python3")
        .arg(crate::support::workspace().join("tests/data/k8s-validate.py"))
        .args(["-k", KUBERNETES])
        .arg(file)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "k8s-validate refused {} (pip install kubernetes-validate if it is missing):\n{text}",
        file.display()
    );
    assert!(
        text.lines().any(|l| l.starts_with("PASS ")) && !text.contains("FAIL "),
        "{text}"
    );
}

/// Object names of host files end in a hash of the host path (a temp dir here): `HASH`.
fn host_hashes_hidden(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(i) = line.find("-host-") else {
                return line.to_owned();
            };
            match line.rsplit_once('-') {
                Some((head, hash))
                    if head.len() > i
                        && hash.len() == 8
                        && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    format!("{head}-HASH")
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The documents of a YAML stream.
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
#[ignore = "e2e: needs Python packages `bash .ci/run` installs (requests, websockets, kubernetes-validate); run with `cargo test --workspace -- --ignored`"]
fn the_example_agents_render_valid_manifests_that_fence_the_agent_in() {
    for agent in ["researcher", "implementer"] {
        let sb = Sandbox::new();
        let slug = format!("{agent}-k8s");
        let (code, out, err) = run(sb.bottle().args([
            "run",
            agent,
            "--dry-run",
            "--backend",
            "kubernetes",
            "--slug",
            &slug,
        ]));
        assert_eq!(code, 0, "{out}{err}");
        let state = sb.state().join(&slug);
        let file = state.join("kubernetes/bottle.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        golden(
            &format!("{agent}.kubernetes.yaml"),
            &host_hashes_hidden(
                &text
                    .replace(&state.display().to_string(), "/STATE")
                    .replace(&sb.project().display().to_string(), "/PROJECT")
                    .replace(&sb.dir.path().display().to_string(), "/HOME"),
            ),
        );
        validate(&file);

        let docs = documents(&text);
        let policy = &find(&docs, "NetworkPolicy", &format!("bottle-agent-{slug}"))["spec"];
        assert_eq!(
            policy["podSelector"]["matchLabels"]["io.bottle.role"],
            "agent"
        );
        let types: Vec<&str> = policy["policyTypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ingress", "Egress"], "{agent}");
        assert!(
            policy["ingress"].as_sequence().unwrap().is_empty(),
            "{agent}: nothing may connect to the agent"
        );
        let egress = policy["egress"].as_sequence().unwrap();
        assert_eq!(egress.len(), 1, "{agent}: one way out, the bundle");
        let to = egress[0]["to"].as_sequence().unwrap();
        assert_eq!(to.len(), 1);
        assert_eq!(
            to[0]["podSelector"]["matchLabels"]["io.bottle.role"],
            "sidecars"
        );
        assert_eq!(
            to[0]["podSelector"]["matchLabels"]["io.bottle.slug"],
            slug.as_str()
        );
        assert!(to[0].get("ipBlock").is_none() && to[0].get("namespaceSelector").is_none());
        let service = find(&docs, "Service", &format!("bottle-sidecars-{slug}"));
        let service_ports: Vec<u64> = service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        let allowed: Vec<u64> = egress[0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert_eq!(
            allowed, service_ports,
            "{agent}: the bundle's ports, no more"
        );
        // No DNS for the agent here: egress's resolver speaks UDP, which no policy opens (on
        // Kubernetes only clients that use the proxy env get out).
        assert!(
            egress[0]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .all(|p| p["protocol"] == "TCP"),
            "{agent}: no DNS for the agent"
        );
        let bundle_policy =
            &find(&docs, "NetworkPolicy", &format!("bottle-sidecars-{slug}"))["spec"];
        let ingress = bundle_policy["ingress"].as_sequence().unwrap();
        assert_eq!(ingress.len(), 1, "{agent}: one way into the bundle");
        let from = ingress[0]["from"].as_sequence().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["io.bottle.role"],
            "agent"
        );
        // Daemon URLs and NO_PROXY name the bundle by the Service's env, not by DNS.
        let host = format!(
            "$(BOTTLE_SIDECARS_{}_SERVICE_HOST)",
            slug.to_uppercase().replace('-', "_")
        );
        let agent_pod = find(&docs, "Pod", &format!("bottle-agent-{slug}"));
        let env = agent_pod["spec"]["containers"][0]["env"]
            .as_sequence()
            .unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|e| e["name"] == name)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{agent}: no env {name}"))
        };
        assert!(value("HTTPS_PROXY").contains(&host), "{agent}");
        assert!(value("NO_PROXY").ends_with(&format!(",{host}")), "{agent}");
        for pod in ["agent", "sidecars"] {
            let p = find(&docs, "Pod", &format!("bottle-{pod}-{slug}"));
            assert_eq!(p["spec"]["automountServiceAccountToken"], false);
        }
        // Everything carries the slug label `bottle cleanup` would select on.
        for d in &docs {
            assert_eq!(d["metadata"]["labels"]["io.bottle.slug"], slug.as_str());
        }
    }
}

#[test]
#[ignore = "e2e: needs Python packages `bash .ci/run` installs (requests, websockets, kubernetes-validate); run with `cargo test --workspace -- --ignored`"]
fn a_run_hands_over_filled_manifests_and_the_command_that_applies_them() {
    let sb = Sandbox::new();
    sb.agent(
        "k",
        "image: bottle-agent:latest\ncwd: none\nsecrets: [ANTHROPIC_API_KEY]\negress:\n  routes:\n    - host: api.example.com\n      auth: {scheme: Bearer, token_ref: API_TOKEN}\n",
    );
    let slug = "handoff-k8s";
    let (code, out, err) = run(sb
        .bottle()
        .env("ANTHROPIC_API_KEY", "sk-ant-never-written-0123456789")
        .env("API_TOKEN", "tok-never-written-0123456789")
        .args([
            "run",
            "k",
            "--yes",
            "--backend",
            "kubernetes",
            "--slug",
            slug,
        ]));
    assert_eq!(code, 0, "{out}{err}");
    let state = sb.state().join(slug);
    let file = state.join("kubernetes/bottle.yaml");
    assert!(
        err.contains(&format!("kubectl apply -f {}", file.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "kubectl create secret generic bottle-{slug}-credentials"
        )),
        "{err}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for secret in ["sk-ant-never-written", "tok-never-written"] {
        assert!(!text.contains(secret), "a credential was written");
        assert!(!err.contains(secret));
    }
    assert!(
        err.contains("--from-literal=ANTHROPIC_API_KEY=\"$ANTHROPIC_API_KEY\"")
            && err.contains("=\"$API_TOKEN\""),
        "{err}"
    );
    validate(&file);
    let docs = documents(&text);
    let filled: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap" || d["kind"] == "Secret")
        .collect();
    assert!(!filled.is_empty());
    for d in filled {
        let data = d["data"].as_mapping().unwrap();
        assert!(
            !data.is_empty(),
            "{:?} was not filled",
            d["metadata"]["name"]
        );
    }
    assert_eq!(crate::support::mode(&file), 0o600);
    // The run's hop token: from a private file (never argv or the output) into the
    // credentials Secret, for each daemon and the agent; the agent's files carry it, as
    // Secrets.
    let hop = state.join("kubernetes/hop-token");
    assert_eq!(crate::support::mode(&hop), 0o600);
    let token = std::fs::read_to_string(&hop).unwrap();
    assert_eq!(token.len(), 64, "{token}");
    assert!(!err.contains(&token) && !out.contains(&token));
    for key in ["BOTTLE_HOP_TOKEN", "EGRESS_HOP_TOKEN"] {
        assert!(
            err.contains(&format!("--from-file={key}={}", hop.display())),
            "{err}"
        );
    }
}
