use super::*;
use bottle_plugin_sdk::testing;

fn stack() -> Stack {
    let mut s = testing::stack();
    s.bundle[0].daemon.mounts = vec![
        Mount {
            source: MountSource::State("pipelock".into()),
            target: "/etc/pipelock".into(),
            read_only: true,
        },
        Mount {
            source: MountSource::State("ca/pipelock/key.pem".into()),
            target: "/etc/pipelock/ca-key.pem".into(),
            read_only: true,
        },
    ];
    s.bundle_secrets = vec![SecretEnv {
        name: "EGRESS_TOKEN".into(),
        from_host_env: "GITHUB_TOKEN".into(),
    }];
    s.agent.mounts.push(Mount {
        source: MountSource::Host("/home/u/project".into()),
        target: "/workspace".into(),
        read_only: false,
    });
    s
}

fn kind<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

#[test]
fn the_agent_may_reach_the_bundle_ports_and_nothing_else() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    let policy = kind(&objects, "NetworkPolicy", "bottle-agent-demo-abcde");
    let spec = &policy["spec"];
    assert_eq!(spec["podSelector"]["matchLabels"][labels::ROLE], "agent");
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        spec["ingress"],
        json!([]),
        "nothing may connect to the agent"
    );
    let egress = spec["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1, "one rule: the bundle");
    assert_eq!(
        egress[0]["to"],
        json!([{"podSelector": {"matchLabels": {labels::SLUG: "demo-abcde", labels::ROLE: "sidecars"}}}])
    );
    let ports: Vec<u64> = egress[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8888, 9100]);
    assert!(!policy.to_string().contains("53"), "no DNS for the agent");
    let bundle = kind(&objects, "NetworkPolicy", "bottle-sidecars-demo-abcde");
    assert_eq!(
        bundle["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][labels::ROLE],
        "agent"
    );
    assert!(bundle.to_string().contains("169.254.0.0/16"));
}

#[test]
fn no_pod_gets_a_token_and_credentials_are_secret_references() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    for name in ["bottle-agent-demo-abcde", "bottle-sidecars-demo-abcde"] {
        let pod = kind(&objects, "Pod", name);
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{name}");
    }
    let agent = kind(&objects, "Pod", "bottle-agent-demo-abcde");
    let env = agent["spec"]["containers"][0]["env"].as_array().unwrap();
    let key = env
        .iter()
        .find(|e| e["name"] == "ANTHROPIC_API_KEY")
        .unwrap();
    assert_eq!(
        key["valueFrom"]["secretKeyRef"],
        json!({"name": "bottle-demo-abcde-credentials", "key": "ANTHROPIC_API_KEY"})
    );
    let bundle = kind(&objects, "Pod", "bottle-sidecars-demo-abcde");
    assert!(
        bundle.to_string().contains(r#""key":"EGRESS_TOKEN""#),
        "{bundle}"
    );
    // Nothing renders the credentials Secret itself.
    assert!(
        !objects
            .iter()
            .any(|o| o["metadata"]["name"] == "bottle-demo-abcde-credentials")
    );
}

#[test]
fn staged_files_are_configmaps_or_secrets_to_fill_and_writable_mounts_are_empty() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    let config = kind(&objects, "ConfigMap", "bottle-demo-abcde-pipelock");
    assert_eq!(
        config["metadata"]["annotations"][SOURCE_ANNOTATION],
        "state:pipelock"
    );
    assert_eq!(config["data"], json!({}));
    let key = kind(&objects, "Secret", "bottle-demo-abcde-ca-pipelock-key-pem");
    assert_eq!(
        key["metadata"]["annotations"][SOURCE_ANNOTATION],
        "state:ca/pipelock/key.pem"
    );
    let bundle = kind(&objects, "Pod", "bottle-sidecars-demo-abcde");
    let mounts = bundle["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    let key_mount = mounts
        .iter()
        .find(|m| m["subPath"] == "key.pem")
        .expect("a file source is mounted by subPath");
    assert_eq!(key_mount["mountPath"], private_target("pipelock", 1));
    let agent = kind(&objects, "Pod", "bottle-agent-demo-abcde");
    let project = agent["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/workspace")
        .unwrap();
    let volume = agent["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == project["name"])
        .unwrap();
    assert_eq!(volume["emptyDir"], json!({}));
}

#[test]
fn file_sources_are_told_from_dirs_by_their_last_segment() {
    for file in [
        "ca/agent-trust.pem",
        "bundle/daemons.json",
        "agent/gitconfig",
        "/h/.ssh/id_ed25519",
    ] {
        assert!(is_file_source(file), "{file}");
    }
    for dir in ["egress", "git-gate", "supervise/queue", "/home/u/project/"] {
        assert!(!is_file_source(dir), "{dir}");
    }
}

#[test]
fn daemon_urls_use_the_service_env_without_dns_or_names_with_a_service_ip() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    let agent = kind(&objects, "Pod", "bottle-agent-demo-abcde");
    let text = agent.to_string();
    assert!(
        text.contains("http://$(BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST):8888"),
        "{text}"
    );
    assert!(agent["spec"].get("hostAliases").is_none());
    let d = Kubernetes::render(&s, &Settings::default()).unwrap();
    let mcp = d
        .documents
        .iter()
        .find(|d| d.path == MCP_CONFIG_STATE_PATH)
        .unwrap();
    assert!(
        mcp.contents
            .contains("http://${BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST}:9100/"),
        "{}",
        mcp.contents
    );

    let with_ip = Settings {
        bundle_service_ip: Some("10.96.0.50".into()),
        ..Settings::default()
    };
    let objects = super::objects(&s, &with_ip).unwrap();
    let agent = kind(&objects, "Pod", "bottle-agent-demo-abcde");
    assert_eq!(agent["spec"]["hostAliases"][0]["ip"], "10.96.0.50");
    assert!(
        agent["spec"]["hostAliases"][0]["hostnames"]
            .as_array()
            .unwrap()
            .contains(&json!("supervise"))
    );
    let service = kind(&objects, "Service", "bottle-sidecars-demo-abcde");
    assert_eq!(service["spec"]["clusterIP"], "10.96.0.50");
    assert!(!agent.to_string().contains("SERVICE_HOST"));
}

#[test]
fn bad_settings_and_services_are_refused_with_the_fix() {
    let bad = Settings {
        bundle_service_ip: Some("10.96.0".into()),
        ..Settings::default()
    };
    let e = Kubernetes::render(&stack(), &bad).unwrap_err();
    assert!(
        matches!(&e, PluginError::InvalidSettings(m) if m.contains("plugins.kubernetes.bundle_service_ip")),
        "{e:?}"
    );
    let mut s = stack();
    s.services.push(OwnedService {
        plugin: "x".into(),
        service: Service {
            name: "db".into(),
            image: "postgres".into(),
            command: vec![],
            env: vec![],
            mounts: vec![],
            networks: vec![],
            aliases: vec![],
            user: None,
            read_only_root: false,
            health: None,
            privileged: false,
            cap_add: vec![],
            ports: vec![],
        },
    });
    let e = Kubernetes::render(&s, &Settings::default()).unwrap_err();
    assert!(
        matches!(&e, PluginError::Unsupported(m) if m.contains("use the docker backend")),
        "{e:?}"
    );
}
