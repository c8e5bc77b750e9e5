//! The hop token: what the agent shows the bundle's daemons, so they serve nobody else.
//!
//! Any local process can reach a container's address on a bridge (Docker's bundle on its
//! egress bridge, the smolmachines VM's bundle on its own), so without a token a local user
//! could fetch through egress's injected credentials, push through git-gate's SSH key or
//! file requests with supervise. The host mints a token for each run
//! ([`HOP_TOKEN_HOST_ENV`]); each daemon gets it as `<PLUGIN>_HOP_TOKEN` and serves only what
//! carries it: egress in the proxy URL's password, git-gate as the first segment of the repo
//! path, supervise as a bearer token. Only the agent is given it: its proxy URLs at exec time
//! ([`proxy_url`]), and the files rendered for it with [`PLACEHOLDER`] filled in by the host.

pub use crate::names::HOP_TOKEN_HOST_ENV;
use sha2::{Digest as _, Sha256};

/// Stands for the token in files a backend plugin renders (a gitconfig, the MCP config):
/// plugins never see the token; the driver that holds it puts it in place when it copies the
/// files for the agent.
pub const PLACEHOLDER: &str = "@BOTTLE_HOP_TOKEN@";

/// `url` (an `http://` proxy URL) carrying `token` as its password (`http://bottle:<token>@…`);
/// `None` for any other URL.
pub fn proxy_url(url: &str, token: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    Some(format!("http://bottle:{token}@{rest}"))
}

/// The `Proxy-Authorization` value that carries `token` to egress (what a client sends for
/// [`proxy_url`]): for the bundle's own calls through egress (its init, supervise).
pub fn proxy_authorization(token: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bottle:{token}"))
    )
}

/// Whether env `name` is a proxy variable ([`proxy_url`] applies to its value).
pub fn is_proxy_var(name: &str) -> bool {
    ["http_proxy", "https_proxy", "all_proxy"].contains(&name.to_ascii_lowercase().as_str())
}

/// The proxy variables of `env`, each carrying `token`: what the agent's commands get.
pub fn proxy_env<'a>(
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
    token: &str,
) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, _)| is_proxy_var(k))
        .filter_map(|(k, v)| Some((k.to_owned(), proxy_url(v, token)?)))
        .collect()
}

/// The env name under which `plugin`'s daemons get the token (`git-gate` → `GIT_GATE_HOP_TOKEN`).
pub fn daemon_env(plugin: &str) -> String {
    format!("{}HOP_TOKEN", crate::names::secret_env_prefix(plugin))
}

/// A token to check presented values against.
#[derive(Clone, PartialEq, Eq)]
pub struct HopToken {
    /// SHA-256 of the token: values are compared digest to digest, so the time a comparison
    /// takes says nothing about how much of the token a guess got right.
    digest: [u8; 32],
}

impl HopToken {
    /// The token `token`.
    pub fn new(token: &str) -> HopToken {
        HopToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// The token in env `name`; none when it is unset or empty (the hop is then open).
    pub fn from_env(name: &str) -> Option<HopToken> {
        std::env::var(name)
            .ok()
            .filter(|t| !t.is_empty())
            .map(|t| HopToken::new(&t))
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest == self.digest
    }

    /// Whether an `Authorization` header value is `Bearer <the token>`.
    pub fn matches_bearer(&self, header: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(header) else {
            return false;
        };
        match text.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.matches(token.trim().as_bytes())
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for HopToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_matches() {
        let t = HopToken::new("s3cret");
        assert!(t.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3CRET"] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(t.matches_bearer(b"Bearer s3cret"));
        assert!(t.matches_bearer(b"bearer  s3cret "));
        for wrong in [
            &b"s3cret"[..],
            b"Basic s3cret",
            b"Bearer",
            b"Bearer x",
            b"\xff",
        ] {
            assert!(!t.matches_bearer(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "HopToken(..)");
    }

    #[test]
    fn proxy_urls_carry_the_token_and_nothing_else_does() {
        let env = [
            ("HTTPS_PROXY", "http://egress:9099"),
            ("http_proxy", "http://egress:9099/"),
            ("NO_PROXY", "supervise"),
            ("ALL_PROXY", "socks5://x:1"),
        ];
        assert_eq!(
            proxy_env(env, "t0k"),
            [
                (
                    "HTTPS_PROXY".to_owned(),
                    "http://bottle:t0k@egress:9099".to_owned()
                ),
                (
                    "http_proxy".to_owned(),
                    "http://bottle:t0k@egress:9099/".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn each_plugin_has_its_own_env_name() {
        assert_eq!(daemon_env("git-gate"), "GIT_GATE_HOP_TOKEN");
        assert_eq!(daemon_env("egress"), "EGRESS_HOP_TOKEN");
    }
}
