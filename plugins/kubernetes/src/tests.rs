use super::*;
use bottle_plugin_sdk::testing;

/// The SDK's stack with what the built-in sidecars add on a real run: a dir, a CA key and a
/// CA cert from the state dir, an SSH key from the host, a writable queue, a credential for
/// the bundle, proxy env with `NO_PROXY`, and the project dir mounted read-write.
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
        Mount {
            source: MountSource::Host("/home/u/.ssh/id_ed25519".into()),
            target: "/etc/pipelock/id".into(),
            read_only: true,
        },
    ];
    s.bundle[1].daemon.mounts = vec![Mount {
        source: MountSource::State("supervise/queue".into()),
        target: "/run/supervise/queue".into(),
        read_only: false,
    }];
    s.bundle[1].daemon.env = vec![kv("SUPERVISE_QUEUE_DIR", "/run/supervise/queue")];
    s.bundle[1].daemon.ready_check = Some(vec!["/usr/local/bin/supervise".into()]);
    s.bundle_secrets = vec![
        SecretEnv {
            name: "EGRESS_TOKEN".into(),
            from_host_env: "GITHUB_TOKEN".into(),
        },
        SecretEnv {
            name: "EGRESS_HOP_TOKEN".into(),
            from_host_env: HOP_TOKEN_HOST_ENV.into(),
        },
    ];
    s.agent
        .env
        .push(kv("NO_PROXY", "127.0.0.1,localhost,supervise"));
    s.agent.mounts.push(Mount {
        source: MountSource::State("ca/agent-trust.pem".into()),
        target: "/etc/ssl/certs/ca-certificates.crt".into(),
        read_only: true,
    });
    s.agent.mounts.push(Mount {
        source: MountSource::Host("/home/u/project".into()),
        target: "/workspace".into(),
        read_only: false,
    });
    s
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

/// The ConfigMap or Secret filled from `source` (`state:…`, `host:…`).
fn filled_from<'a>(objects: &'a [Value], source: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["metadata"]["annotations"][labels::SOURCE] == source)
        .unwrap_or_else(|| panic!("nothing is filled from {source} in {objects:#?}"))
}

fn container(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn env<'a>(pod: &'a Value, name: &str) -> &'a Value {
    container(pod)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {pod}"))
}

/// The volume mounted at `target` and how.
fn mounted_at<'a>(pod: &'a Value, target: &str) -> (&'a Value, &'a Value) {
    let mount = container(pod)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == target)
        .unwrap_or_else(|| panic!("nothing at {target} in {pod}"));
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    (mount, volume)
}

fn ports(rule: &Value) -> Vec<u64> {
    rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_agent_may_reach_the_bundle_ports_and_nothing_else() {
    let objects = objects(&stack(), &Settings::default()).unwrap();
    let policy = find(&objects, "NetworkPolicy", "bottle-agent-demo-abcde");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({labels::SLUG: "demo-abcde", labels::ROLE: "agent"})
    );
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
    assert_eq!(ports(&egress[0]), [8888, 9100]);
    assert!(
        egress[0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["protocol"] == "TCP")
    );
    assert!(!policy.to_string().contains("53"), "no DNS for the agent");

    let bundle = &find(&objects, "NetworkPolicy", "bottle-sidecars-demo-abcde")["spec"];
    assert_eq!(
        bundle["podSelector"]["matchLabels"][labels::ROLE],
        "sidecars"
    );
    let ingress = bundle["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "one way in: the agent");
    assert_eq!(
        ingress[0]["from"],
        json!([{"podSelector": {"matchLabels": {labels::SLUG: "demo-abcde", labels::ROLE: "agent"}}}])
    );
    assert_eq!(ports(&ingress[0]), [8888, 9100]);
    let out = bundle["egress"].to_string();
    for range in NOT_OUT_V4.iter().chain(NOT_OUT_V6) {
        assert!(out.contains(range), "{range} is not excepted: {out}");
    }

    let service = find(&objects, "Service", "bottle-sidecars-demo-abcde");
    assert_eq!(
        service["spec"]["selector"],
        json!({labels::SLUG: "demo-abcde", labels::ROLE: "sidecars"})
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "p-8888", "port": 8888, "targetPort": 8888, "protocol": "TCP"},
            {"name": "p-9100", "port": 9100, "targetPort": 9100, "protocol": "TCP"},
        ])
    );
}

#[test]
fn the_stream_is_in_apply_order_and_every_object_is_labelled_with_the_slug() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let first_service = kinds.iter().position(|k| *k == "Service").unwrap();
    assert!(
        kinds[..first_service]
            .iter()
            .all(|k| *k == "ConfigMap" || *k == "Secret"),
        "{kinds:?}"
    );
    assert_eq!(
        &kinds[first_service..],
        ["Service", "NetworkPolicy", "NetworkPolicy", "Pod", "Pod"],
        "the Service before the pods, whose env it fills"
    );
    for o in &objects {
        assert_eq!(o["metadata"]["labels"][labels::SLUG], "demo-abcde", "{o}");
        assert_eq!(o["metadata"]["labels"][labels::AGENT], "demo", "{o}");
    }
    // The documents as the host writes them: one YAML stream, each object once.
    let d = Kubernetes::render(&s, &Settings::default()).unwrap();
    assert_eq!(d.project, "bottle-demo-abcde");
    assert_eq!(
        (d.documents[0].path.as_str(), d.documents[0].mode),
        (MANIFEST, 0o600)
    );
    let parsed: Vec<Value> = serde_yaml::Deserializer::from_str(&d.documents[0].contents)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    assert_eq!(parsed, objects);
}

/// `K8S_DUMP_DIR=DIR cargo test -p bottle-plugin-kubernetes` writes what this plugin renders
/// for the SDK's stack and for this file's fuller one, for `tests/data/k8s-validate.py`.
#[test]
fn dump_for_the_validator() {
    let Some(dir) = std::env::var_os("K8S_DUMP_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let with_ip = Settings {
        bundle_service_ip: Some("10.96.0.50".into()),
        ..Settings::default()
    };
    for (name, stack, settings) in [
        ("sdk-stack.yaml", testing::stack(), Settings::default()),
        ("full-stack.yaml", stack(), Settings::default()),
        ("full-stack-service-ip.yaml", stack(), with_ip),
    ] {
        let d = Kubernetes::render(&stack, &settings).unwrap();
        std::fs::write(dir.join(name), &d.documents[0].contents).unwrap();
    }
}

#[test]
fn no_pod_gets_a_token_and_credentials_are_secret_references_never_values() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    for name in ["bottle-agent-demo-abcde", "bottle-sidecars-demo-abcde"] {
        let pod = find(&objects, "Pod", name);
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{name}");
    }
    let agent = find(&objects, "Pod", "bottle-agent-demo-abcde");
    assert_eq!(
        env(agent, "ANTHROPIC_API_KEY"),
        &json!({"name": "ANTHROPIC_API_KEY", "valueFrom": {"secretKeyRef":
            {"name": "bottle-demo-abcde-credentials", "key": "ANTHROPIC_API_KEY"}}})
    );
    let bundle = find(&objects, "Pod", "bottle-sidecars-demo-abcde");
    assert_eq!(
        env(bundle, "EGRESS_TOKEN"),
        &json!({"name": "EGRESS_TOKEN", "valueFrom": {"secretKeyRef":
            {"name": "bottle-demo-abcde-credentials", "key": "EGRESS_TOKEN"}}})
    );
    // The run's hop token, by Secret reference too: each daemon's, and the agent's first in
    // its env (its proxy URLs expand it).
    assert_eq!(
        env(bundle, "EGRESS_HOP_TOKEN"),
        &json!({"name": "EGRESS_HOP_TOKEN", "valueFrom": {"secretKeyRef":
            {"name": "bottle-demo-abcde-credentials", "key": "EGRESS_HOP_TOKEN"}}})
    );
    assert_eq!(
        container(agent)["env"][0],
        json!({"name": "BOTTLE_HOP_TOKEN", "valueFrom": {"secretKeyRef":
            {"name": "bottle-demo-abcde-credentials", "key": "BOTTLE_HOP_TOKEN"}}})
    );
    // Nothing renders the credentials Secret, or any value: every Secret waits for the host.
    assert!(
        !objects
            .iter()
            .any(|o| o["metadata"]["name"] == "bottle-demo-abcde-credentials")
    );
    for o in objects.iter().filter(|o| o["kind"] == "Secret") {
        assert_eq!(o["data"], json!({}), "{o}");
        assert!(o.get("stringData").is_none(), "{o}");
    }
}

#[test]
fn staged_files_are_configmaps_or_secrets_to_fill_and_writable_mounts_are_empty() {
    let s = stack();
    let objects = objects(&s, &Settings::default()).unwrap();
    let config = filled_from(&objects, "state:pipelock");
    assert_eq!(config["kind"], "ConfigMap");
    assert_eq!(config["data"], json!({}));
    assert_eq!(config["metadata"]["labels"][labels::ROLE], "config");
    for source in [
        "state:ca/pipelock/key.pem",
        "state:ca/agent-trust.pem",
        "host:/home/u/.ssh/id_ed25519",
    ] {
        let o = filled_from(&objects, source);
        assert_eq!(o["kind"], "Secret", "{source}");
        assert_eq!(o["metadata"]["labels"][labels::ROLE], "secret", "{source}");
    }

    let bundle = find(&objects, "Pod", "bottle-sidecars-demo-abcde");
    // Read-only daemon mounts go where bottle-init installs them from, as on Docker.
    let (key, key_volume) = mounted_at(bundle, &private_target("pipelock", 1));
    assert_eq!(key["subPath"], "key.pem");
    assert_eq!(key["readOnly"], true);
    assert_eq!(
        key_volume["secret"]["secretName"],
        filled_from(&objects, "state:ca/pipelock/key.pem")["metadata"]["name"]
    );
    assert_eq!(key_volume["secret"]["defaultMode"], 0o400, "root's only");
    let (dir, _) = mounted_at(bundle, &private_target("pipelock", 0));
    assert!(dir.get("subPath").is_none(), "a dir is mounted whole");
    let (ssh, _) = mounted_at(bundle, &private_target("pipelock", 2));
    assert_eq!(ssh["subPath"], "id_ed25519");
    let (queue, queue_volume) = mounted_at(bundle, "/run/supervise/queue");
    assert_eq!(queue["readOnly"], false);
    assert_eq!(queue_volume["emptyDir"], json!({}));
    let (list, _) = mounted_at(bundle, DAEMONS_IN_BUNDLE);
    assert_eq!(list["subPath"], "daemons.json");
    assert_eq!(
        container(bundle)["readinessProbe"]["exec"]["command"],
        json!([BUNDLE_INIT, "ready", DAEMONS_IN_BUNDLE])
    );
    assert_eq!(
        container(bundle)["command"],
        json!([BUNDLE_INIT, DAEMONS_IN_BUNDLE])
    );

    let agent = find(&objects, "Pod", "bottle-agent-demo-abcde");
    let (_, project) = mounted_at(agent, "/workspace");
    assert_eq!(project["emptyDir"], json!({}));
    let (trust, trust_volume) = mounted_at(agent, "/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(trust["subPath"], "agent-trust.pem");
    assert_eq!(
        trust_volume["secret"]["defaultMode"], 0o444,
        "the agent may run as any user"
    );
    let (mcp, mcp_volume) = mounted_at(agent, MCP_CONFIG_IN_AGENT);
    assert_eq!(mcp["subPath"], "mcp.json");
    // A Secret: the host fills in the run's hop token (its bearer).
    assert_eq!(
        mcp_volume["secret"]["secretName"],
        filled_from(&objects, &format!("state:{MCP_CONFIG_STATE_PATH}"))["metadata"]["name"]
    );
    assert_eq!(env(agent, MCP_CONFIG_ENV)["value"], MCP_CONFIG_IN_AGENT);
}

#[test]
fn file_sources_are_told_from_dirs_by_their_last_segment() {
    for file in [
        "ca/agent-trust.pem",
        "ca/pipelock/key.pem",
        "agent/mcp.json",
        "bundle/daemons.json",
        "agent/gitconfig",
        "git-gate/known_hosts",
        "/h/.ssh/id_ed25519",
        "/h/.ssh/id_rsa",
        "/h/keys/deploy_key",
        "/h/keys/github-key",
    ] {
        assert!(is_file_source(file), "{file}");
    }
    for dir in [
        "egress",
        "git-gate",
        "pipelock",
        "supervise/queue",
        "/home/u/project/",
        "/home/u/keys",
    ] {
        assert!(!is_file_source(dir), "{dir}");
    }
}

#[test]
fn object_names_are_unique_stable_and_valid() {
    let a = object_name("demo-abcde", "host:/home/u/.ssh/work/id_ed25519");
    let b = object_name("demo-abcde", "host:/home/u/.ssh/play/id_ed25519");
    assert_ne!(a, b, "two keys of one name are two objects");
    assert!(a.starts_with("bottle-demo-abcde-host-id-ed25519-"), "{a}");
    assert!(
        !a.contains("home"),
        "the user's paths stay out of names: {a}"
    );
    assert_eq!(
        a,
        object_name("demo-abcde", "host:/home/u/.ssh/work/id_ed25519")
    );
    assert_ne!(
        object_name("demo-abcde", "state:a/b"),
        object_name("demo-abcde", "state:a-b")
    );
    let long = format!("state:{}/x.pem", "Very_Long.dir/".repeat(40));
    for name in [
        a,
        object_name("demo-abcde", "state:ca/agent-trust.pem"),
        object_name("demo-abcde", &long),
        object_name("demo-abcde", "state:..."),
    ] {
        assert!(name.len() <= 253, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(
            name.ends_with(|c: char| c.is_ascii_alphanumeric()) && !name.contains("--"),
            "{name}"
        );
    }
}

#[test]
fn daemon_urls_use_the_service_env_without_dns_or_names_with_a_service_ip() {
    let mut s = stack();
    s.agent.env.push(kv("PS1", "$(whoami) $$ ${HOME}"));
    let objects = objects(&s, &Settings::default()).unwrap();
    let agent = find(&objects, "Pod", "bottle-agent-demo-abcde");
    assert_eq!(
        env(agent, "HTTPS_PROXY")["value"],
        "http://bottle:$(BOTTLE_HOP_TOKEN)@$(BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST):8888"
    );
    // supervise is reached without the proxy, by address now.
    assert_eq!(
        env(agent, "NO_PROXY")["value"],
        "127.0.0.1,localhost,supervise,$(BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST)"
    );
    // Kubernetes would expand `$(…)` and fold `$$`: what the manifest says is escaped.
    assert_eq!(env(agent, "PS1")["value"], "$$(whoami) $$$$ $${HOME}");
    assert_eq!(agent["spec"]["enableServiceLinks"], true);
    assert!(agent["spec"].get("hostAliases").is_none());
    // The agent's `Host` headers name the Service's address: supervise is told it.
    let bundle = find(&objects, "Pod", "bottle-sidecars-demo-abcde");
    assert_eq!(
        env(bundle, BUNDLE_ADDRESS_ENV)["value"],
        "$(BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST)"
    );
    assert_eq!(bundle["spec"]["enableServiceLinks"], true);
    let d = Kubernetes::render(&s, &Settings::default()).unwrap();
    let mcp = d
        .documents
        .iter()
        .find(|d| d.path == MCP_CONFIG_STATE_PATH)
        .unwrap();
    let mcp: Value = serde_json::from_str(&mcp.contents).unwrap();
    assert_eq!(
        mcp["mcpServers"]["supervise"]["url"],
        "http://${BOTTLE_SIDECARS_DEMO_ABCDE_SERVICE_HOST}:9100/"
    );

    let with_ip = Settings {
        bundle_service_ip: Some("10.96.0.50".into()),
        ..Settings::default()
    };
    s.bundle[0].daemon.aliases = vec!["proxy".into()];
    s.bundle.push(OwnedDaemon {
        plugin: "quiet".into(),
        daemon: Daemon {
            name: "quiet".into(),
            command: vec!["/bin/quiet".into()],
            env: vec![],
            mounts: vec![],
            ports: vec![],
            aliases: vec![],
            ready_check: None,
        },
    });
    let objects = super::objects(&s, &with_ip).unwrap();
    let agent = find(&objects, "Pod", "bottle-agent-demo-abcde");
    assert_eq!(
        agent["spec"]["hostAliases"],
        json!([{"ip": "10.96.0.50", "hostnames": ["pipelock", "proxy", "supervise", "quiet"]}])
    );
    assert_eq!(
        env(agent, "HTTPS_PROXY")["value"],
        "http://bottle:$(BOTTLE_HOP_TOKEN)@pipelock:8888"
    );
    assert!(!agent.to_string().contains("SERVICE_HOST"));
    let service = find(&objects, "Service", "bottle-sidecars-demo-abcde");
    assert_eq!(service["spec"]["clusterIP"], "10.96.0.50");
    let bundle = find(&objects, "Pod", "bottle-sidecars-demo-abcde");
    assert_eq!(env(bundle, BUNDLE_ADDRESS_ENV)["value"], "10.96.0.50");
    assert_eq!(bundle["spec"]["enableServiceLinks"], false);
    let d = Kubernetes::render(&s, &with_ip).unwrap();
    assert!(
        d.documents[1].contents.contains("http://supervise:9100/"),
        "{}",
        d.documents[1].contents
    );
}

#[test]
fn with_nothing_in_the_bundle_the_agent_may_reach_nothing() {
    let mut s = testing::stack();
    s.bundle.clear();
    s.agent.mcp_servers.clear();
    let objects = objects(&s, &Settings::default()).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["NetworkPolicy", "Pod"]);
    // An egress rule without ports would allow every port.
    assert_eq!(objects[0]["spec"]["egress"], json!([]));
}

#[test]
fn bad_settings_long_slugs_and_services_are_refused_with_the_fix() {
    let bad = Settings {
        bundle_service_ip: Some("10.96.0".into()),
        ..Settings::default()
    };
    let e = Kubernetes::render(&stack(), &bad).unwrap_err();
    assert!(
        matches!(&e, PluginError::InvalidSettings(m) if m.contains("plugins.kubernetes.bundle_service_ip") && m.contains("10.96.0.50")),
        "{e:?}"
    );
    let mut settings = testing::stack();
    settings.settings = r#"{"bundle_service_iq": "10.96.0.50"}"#.into();
    let e = bottle_plugin_sdk::plugin::render_backend::<Kubernetes>(settings).unwrap_err();
    assert!(
        matches!(&e, PluginError::InvalidSettings(m) if m.contains("bundle_service_iq")),
        "{e:?}"
    );

    let mut s = stack();
    s.slug = format!("{}-abcde", "a".repeat(MAX_SLUG - 5));
    let e = Kubernetes::render(&s, &Settings::default()).unwrap_err();
    assert!(
        matches!(&e, PluginError::Unsupported(m) if m.contains("--slug")),
        "{e:?}"
    );
    s.slug = format!("{}-abcde", "a".repeat(MAX_SLUG - 6));
    assert!(Kubernetes::render(&s, &Settings::default()).is_ok());

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
        matches!(&e, PluginError::Unsupported(m) if m.contains("use the docker backend") && m.contains("db")),
        "{e:?}"
    );
}
