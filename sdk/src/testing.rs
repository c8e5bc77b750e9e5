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
