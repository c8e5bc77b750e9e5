//! Fixtures for plugin unit tests that run natively with `cargo test`.

use crate::types::*;

/// A bottle with an agent that may reach its API (`api.anthropic.com`, as the host's default
/// allowlist gives) and nothing else: no git, no routes, supervise off, settings `{}`.
pub fn bottle() -> Bottle {
    Bottle {
        slug: "demo-abcde".into(),
        agent: Agent {
            name: "demo".into(),
            image: "bottle-agent:latest".into(),
            command: vec!["claude".into()],
            workdir: "/workspace".into(),
            env: vec![],
            secret_env: vec![],
        },
        git: vec![],
        allowlist: vec!["api.anthropic.com".into()],
        routes: vec![],
        supervise: false,
        settings: "{}".into(),
    }
}

/// A render context for `bottle` with no CAs and no endpoints.
pub fn render_context(bottle: Bottle) -> RenderContext {
    RenderContext {
        bottle,
        cas: vec![],
        endpoints: vec![],
    }
}

/// A git upstream on github.com with a pinned key.
pub fn upstream(name: &str) -> GitUpstream {
    GitUpstream {
        name: name.into(),
        url: format!("git@github.com:example/{name}.git"),
        host: "github.com".into(),
        port: 22,
        key_file: "/home/user/.ssh/id_ed25519".into(),
        known_host_key: Some(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .into(),
        ),
    }
}

/// A merged stack for backend tests: the [`bottle`] agent with secret `ANTHROPIC_API_KEY`,
/// a proxy env pointing at pipelock, and a bundle of pipelock (8888) and supervise (9100,
/// registered as the agent's MCP server).
pub fn stack() -> Stack {
    let daemon = |name: &str, port: u16| OwnedDaemon {
        plugin: name.into(),
        daemon: Daemon {
            name: name.into(),
            command: vec![format!("/usr/local/bin/{name}")],
            env: vec![],
            mounts: vec![],
            ports: vec![port],
            aliases: vec![],
            ready_check: None,
        },
    };
    Stack {
        slug: "demo-abcde".into(),
        state_dir: "/state/demo-abcde".into(),
        agent: AgentSpec {
            name: "demo".into(),
            image: "bottle-agent:latest".into(),
            command: vec!["claude".into()],
            workdir: "/workspace".into(),
            env: vec![crate::kv("HTTPS_PROXY", "http://pipelock:8888")],
            secret_env: vec!["ANTHROPIC_API_KEY".into()],
            mounts: vec![],
            mcp_servers: vec![McpServer {
                name: "supervise".into(),
                url: "http://supervise:9100/".into(),
            }],
        },
        bundle: vec![daemon("pipelock", 8888), daemon("supervise", 9100)],
        bundle_secrets: vec![],
        services: vec![],
        volumes: vec![],
        settings: "{}".into(),
    }
}
