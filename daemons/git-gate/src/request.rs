//! The git daemon request: the first pkt-line of a `git://` connection.
//!
//! `git-upload-pack /<name>.git\0host=<host>\0` and, for protocol v2, `\0version=2\0` after
//! it (git's `daemon.c`, gitprotocol-pack(5)). Only the two pack services and only a bare
//! repo name are accepted: no `~user`, no `..`, no other directory. Where the gate asks for
//! the hop token ([`bottle_contract::hop`]), the path is `/<token>/<name>.git`.

use bottle_contract::hop::HopToken;

/// What the client asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: clone and fetch.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
}

impl Service {
    /// The word in the log.
    pub fn op(self) -> &'static str {
        match self {
            Service::UploadPack => "fetch",
            Service::ReceivePack => "push",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The service.
    pub service: Service,
    /// The repo name (without `/` and `.git`).
    pub repo: String,
    /// The protocol version the client asked for (`GIT_PROTOCOL=version=N`), if any.
    pub version: Option<u8>,
}

/// Why a request was refused; the text goes to the client as `ERR`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not `git-upload-pack` or `git-receive-pack`.
    #[error("git-gate serves only git-upload-pack and git-receive-pack (clone, fetch, push)")]
    Service,
    /// No path, or not one of ours.
    #[error("bad repo path {0:?}: use git://git-gate/<name>.git")]
    Path(String),
    /// The gate asks for the hop token and the path does not start with it. The text never
    /// echoes what was sent.
    #[error(
        "this git-gate serves only its bottle's agent: the repo URL lacks the bottle's hop token (use the URLs the bottle's gitconfig gives)"
    )]
    Hop,
    /// Not UTF-8, or no space between service and path.
    #[error("malformed request")]
    Malformed,
}

/// Parse the first pkt-line's payload; with `hop`, the path must start with the token.
pub fn parse(payload: &[u8], hop: Option<&HopToken>) -> Result<Request, RequestError> {
    let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
    let mut fields = payload.split(|&b| b == 0);
    let command = std::str::from_utf8(fields.next().unwrap_or_default())
        .map_err(|_| RequestError::Malformed)?;
    let (service, path) = command.split_once(' ').ok_or(RequestError::Malformed)?;
    let service = match service {
        "git-upload-pack" => Service::UploadPack,
        "git-receive-pack" => Service::ReceivePack,
        _ => return Err(RequestError::Service),
    };
    let path = match hop {
        Some(token) => strip_token(path, token).ok_or(RequestError::Hop)?,
        None => path,
    };
    let repo = repo_name(path).ok_or_else(|| RequestError::Path(shorten(path)))?;
    // `host=…\0`, then an empty field, then extra parameters (`version=2`).
    let mut version = None;
    for field in fields {
        if let Some(v) = field.strip_prefix(b"version=") {
            version = match v {
                b"0" => Some(0),
                b"1" => Some(1),
                b"2" => Some(2),
                _ => None,
            };
        }
    }
    Ok(Request {
        service,
        repo,
        version,
    })
}

/// `/<token>/<rest>` to `/<rest>` when the first segment is the token.
fn strip_token<'a>(path: &'a str, token: &HopToken) -> Option<&'a str> {
    let segment = path.strip_prefix('/')?.split('/').next()?;
    let rest = &path[1 + segment.len()..];
    (token.matches(segment.as_bytes()) && rest.starts_with('/')).then_some(rest)
}

/// `/<name>.git` or `/<name>` to `<name>`: one path component of letters, digits, `-`, `_`
/// and `.`, not starting with `.` (so never `..`).
fn repo_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let name = rest.strip_suffix(".git").unwrap_or(rest);
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    ok.then(|| name.to_owned())
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_open(payload: &[u8]) -> Result<Request, RequestError> {
        parse(payload, None)
    }

    #[test]
    fn v0_and_v2_requests() {
        let r = parse_open(b"git-upload-pack /bottle.git\0host=git-gate\0").unwrap();
        assert_eq!(
            r,
            Request {
                service: Service::UploadPack,
                repo: "bottle".into(),
                version: None
            }
        );
        let r = parse_open(b"git-receive-pack /a-b_c.d\0host=git-gate\0\0version=2\0").unwrap();
        assert_eq!(r.service, Service::ReceivePack);
        assert_eq!(r.repo, "a-b_c.d");
        assert_eq!(r.version, Some(2));
    }

    #[test]
    fn paths_outside_the_served_names_are_refused() {
        for path in [
            "/../etc.git",
            "/..",
            "/a/b.git",
            "etc.git",
            "/~root/x.git",
            "/.git",
            "/",
            "/x y.git",
            "//x.git",
        ] {
            let line = format!("git-upload-pack {path}\0host=x\0");
            assert!(
                matches!(parse_open(line.as_bytes()), Err(RequestError::Path(_))),
                "{path}"
            );
        }
        assert_eq!(
            parse_open(b"git-upload-archive /a.git\0"),
            Err(RequestError::Service)
        );
        assert_eq!(parse_open(b"nonsense"), Err(RequestError::Malformed));
        assert_eq!(parse_open(b"\xff\xfe /a"), Err(RequestError::Malformed));
    }

    #[test]
    fn with_a_hop_token_the_path_starts_with_it() {
        let token = HopToken::new("0123abcd");
        let r = parse(
            b"git-upload-pack /0123abcd/bottle.git\0host=x\0",
            Some(&token),
        )
        .unwrap();
        assert_eq!(r.repo, "bottle");
        for path in [
            "/bottle.git",
            "/0123abcc/bottle.git",
            "/0123abcd",
            "/0123abcdbottle.git",
            "//0123abcd/bottle.git",
            "/",
            "",
        ] {
            let line = format!("git-receive-pack {path}\0host=x\0");
            let err = parse(line.as_bytes(), Some(&token)).unwrap_err();
            assert_eq!(err, RequestError::Hop, "{path}");
            assert!(!err.to_string().contains("0123"), "{err}");
        }
        // After the token, the same rules: and the refusal does not show the token.
        let err = parse(b"git-upload-pack /0123abcd/../x.git\0", Some(&token)).unwrap_err();
        assert_eq!(err, RequestError::Path("/../x.git".into()));
    }
}
