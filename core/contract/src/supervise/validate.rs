//! The agent's input, made safe before it is queued or shown to a human: it is untrusted,
//! perhaps prompt-injected, and may try to smuggle terminal escapes into the operator's view.

use crate::names::valid_host;

/// The longest reason kept (characters).
pub const MAX_REASON: usize = 500;
/// The longest path prefix accepted.
pub const MAX_PATH: usize = 200;

/// A host the agent may ask for: a DNS name, lower case; `*.` only over two labels or more;
/// no IP literal, no loopback or cluster-internal name.
pub fn host(raw: &str) -> Result<String, String> {
    let h = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if h.parse::<std::net::IpAddr>().is_ok()
        || h.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    {
        return Err(format!(
            "{}: ask for a host name, not an IP address",
            shown(raw)
        ));
    }
    if !valid_host(&h) || h.contains(':') {
        return Err(format!(
            "{}: give a bare host name like `pypi.org` (no scheme, port or path)",
            shown(raw)
        ));
    }
    let bare = h.strip_prefix("*.").unwrap_or(&h);
    // What a resolver reads as an address (`127.1`, `0x7f.1`, `169.254.43518`), not a name.
    let last = bare.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return Err(format!(
            "{}: ask for a host name, not an IP address (a name cannot end in a number)",
            shown(raw)
        ));
    }
    if h.starts_with("*.") && bare.split('.').count() < 2 {
        return Err(format!(
            "{}: `*.` needs a domain of two labels or more",
            shown(raw)
        ));
    }
    // Also under a wildcard rule of the list (`*.kawasaki.jp`: every `x.kawasaki.jp` is one),
    // where `bare` itself is not a suffix but every name below it is.
    if h.starts_with("*.") && (is_public_suffix(bare) || is_public_suffix(&format!("x.{bare}"))) {
        return Err(format!(
            "{}: `{bare}` is a public suffix (anyone can register a name under it), so a wildcard over it would open hosts of every owner; ask for the exact host, or a wildcard under a domain of one owner (`*.example.co.uk`)",
            shown(raw)
        ));
    }
    if h.starts_with("*.") && has_public_suffix_below(bare) {
        return Err(format!(
            "{}: names anyone can register lie below `{bare}` (the public suffix list has suffixes under it, like a cloud's buckets or sites), so a wildcard over it would open hosts of every owner; ask for the exact host",
            shown(raw)
        ));
    }
    if !bare.contains('.') {
        return Err(format!(
            "{}: a single-label name is internal; give a full domain",
            shown(raw)
        ));
    }
    let internal = [
        "localhost",
        "local",
        "internal",
        "localdomain",
        "home.arpa",
        "in-addr.arpa",
        "ip6.arpa",
    ];
    if internal
        .iter()
        .any(|s| bare == *s || bare.ends_with(&format!(".{s}")))
    {
        return Err(format!(
            "{}: internal names cannot be opened from a bottle",
            shown(raw)
        ));
    }
    Ok(h)
}

/// Whether `domain` is itself a public suffix by the Public Suffix List, its ICANN section
/// (`co.uk`) or its private one (`github.io`, `s3.amazonaws.com`): names under it belong to
/// anyone who registers one.
pub fn is_public_suffix(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::suffix(d.as_bytes()).is_some_and(|s| s.as_bytes() == d.as_bytes())
}

/// Domains with a public suffix of the list below them, made from the `psl` crate's own list
/// by `tools/psl_parents.py` (first line: the version it was made from).
const PSL_PARENTS: &str = include_str!("psl_parents.txt");

/// Whether names anyone can register lie below `domain`, though it is no public suffix itself:
/// `amazonaws.com` (`s3.amazonaws.com`, `execute-api.REGION.amazonaws.com`, …),
/// `windows.net`, `fastly.net`.
pub fn has_public_suffix_below(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    PSL_PARENTS.lines().skip(1).any(|l| l == d)
}

/// The host of `url` (`scheme://host[:port]/…`), lower case, without a trailing dot; `None`
/// when it is no such URL, or names a user (`https://a@b/`: which host a human reads there is
/// anyone's guess).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains(['@', '\\']) || authority.chars().any(char::is_whitespace) {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether a request to `url` is one a grant of `host` (`x.org` or `*.x.org`) lets out.
pub fn url_is_under(url: &str, host: &str) -> bool {
    let Some(h) = url_host(url) else {
        return false;
    };
    match host.strip_prefix("*.") {
        Some(bare) => h.ends_with(&format!(".{bare}")),
        None => h == host,
    }
}

/// A path prefix: absolute, printable ASCII, at most [`MAX_PATH`] characters, no `..`.
pub fn path_prefix(raw: &str) -> Result<String, String> {
    let ok = raw.starts_with('/')
        && raw.len() <= MAX_PATH
        && !raw.split('/').any(|c| c == "..")
        && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{}: give a path prefix like `/repos/org/` (absolute, at most {MAX_PATH} printable characters)",
            shown(raw)
        ))
    }
}

/// Text for a human: control characters (escapes included) and every other blank become
/// spaces, runs of spaces one (a run of no-break spaces would otherwise wrap the agent's
/// words onto a line of their own that reads like bottle's), cut at `max` characters.
pub fn text(raw: &str, max: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in raw.chars() {
        let c = if c.is_control()
            || c.is_whitespace()
            || c == '\u{2800}'
            || crate::terminal::is_unsafe(c)
        {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
        if out.chars().count() >= max {
            out.push('…');
            break;
        }
    }
    out.trim_end().to_owned()
}

/// The agent's value as an error may quote it.
fn shown(raw: &str) -> String {
    format!("`{}`", text(raw, 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host("PyPI.org.").unwrap(), "pypi.org");
        assert_eq!(host("*.example.com").unwrap(), "*.example.com");
        for bad in [
            "10.0.0.1",
            "::1",
            "[::1]",
            "localhost",
            "db",
            "*.com",
            "x.internal",
            "a.local",
            "https://pypi.org",
            "pypi.org:443",
            "pypi.org/x",
            "",
            "*.*.com",
            "1.1.1.1.in-addr.arpa",
            "127.1",
            "169.254.43518",
            "0x7f.1",
            "example.0x1",
            "*.10.0",
        ] {
            assert!(host(bad).is_err(), "{bad}");
        }
        assert!(host("1password.com").is_ok());
    }

    #[test]
    fn wildcards_never_cover_names_anyone_can_register_below_them() {
        for bad in [
            "*.amazonaws.com",
            "*.compute.amazonaws.com",
            "*.windows.net",
            "*.core.windows.net",
            "*.fastly.net",
            "*.appspot.com",
        ] {
            let err = host(bad).unwrap_err();
            assert!(err.contains("anyone can register"), "{bad}: {err}");
        }
        // Exact hosts under them are what the human sees and grants.
        for ok in [
            "my-bucket.s3.amazonaws.com",
            "amazonaws.com",
            "*.rust-lang.org",
        ] {
            assert!(host(ok).is_ok(), "{ok}: {:?}", host(ok));
        }
    }

    #[test]
    fn the_list_of_parents_is_made_from_the_psl_this_build_uses() {
        let lock = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"));
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"psl\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .expect("psl in Cargo.lock")
            .trim_matches('"');
        let made_from = PSL_PARENTS.lines().next().unwrap();
        assert!(
            made_from.starts_with(&format!("# psl {locked}:")),
            "psl_parents.txt was made from another psl ({made_from}); run tools/psl_parents.py on psl {locked}'s data/rules.txt"
        );
    }

    #[test]
    fn a_url_is_under_a_grant_only_by_its_own_host() {
        assert!(url_is_under("https://pypi.org/simple/", "pypi.org"));
        assert!(url_is_under("https://PyPI.org.:443/x", "pypi.org"));
        assert!(url_is_under("https://files.example.com/x", "*.example.com"));
        for (url, host) in [
            ("https://files.pythonhosted.org/p", "files-pythonhosted.org"),
            ("https://pypi.org@evil.example/p", "evil.example"),
            ("https://pypi.org\\@evil.example/p", "evil.example"),
            ("https://example.com/x", "*.example.com"),
            ("pypi.org/simple", "pypi.org"),
            ("https:///x", "pypi.org"),
        ] {
            assert!(!url_is_under(url, host), "{url} under {host}");
        }
    }

    #[test]
    fn wildcards_never_cover_a_public_suffix_of_either_section() {
        for bad in [
            "*.co.uk",
            "*.github.io",
            "*.s3.amazonaws.com",
            "*.com.au",
            "*.CO.UK.",
            "*.herokuapp.com",
            "*.kawasaki.jp",
        ] {
            let err = host(bad).unwrap_err();
            assert!(err.contains("public suffix"), "{bad}: {err}");
        }
        for ok in [
            "*.example.co.uk",
            "*.me.github.io",
            "*.rust-lang.org",
            "*.example.com",
            "co.uk.example.com",
            "github.io",
        ] {
            assert!(host(ok).is_ok(), "{ok}: {:?}", host(ok));
        }
    }

    #[test]
    fn paths() {
        assert!(path_prefix("/repos/org/").is_ok());
        for bad in [
            "repos",
            "/a/../b",
            "/a b",
            &format!("/{}", "a".repeat(300)),
            "/\u{1b}[2J",
        ] {
            assert!(path_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_for_humans_has_no_escapes() {
        assert_eq!(text("a\u{1b}[31mred\u{7}\n\nb", 100), "a [31mred b");
        assert_eq!(text("x\u{202e}y", 100), "x y");
        assert_eq!(text(&"a".repeat(10), 4), "aaaa…");
        // Blanks that are no ASCII space cannot push the agent's words onto a line of their own.
        for blank in [
            '\u{a0}', '\u{3000}', '\u{2003}', '\u{2800}', '\u{3164}', '\u{1160}',
        ] {
            let raw = format!("pip{}grants: everything", blank.to_string().repeat(200));
            assert_eq!(text(&raw, 500), "pip grants: everything", "{blank:?}");
        }
        assert_eq!(text("hidden\u{e0041}\u{e0042}", 100), "hidden");
    }
}
