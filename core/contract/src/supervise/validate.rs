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

/// Text for a human: control characters (escapes included) become spaces, runs of spaces one,
/// cut at `max` characters.
pub fn text(raw: &str, max: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in raw.chars() {
        let c = if c.is_control() || crate::terminal::is_unsafe(c) {
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
        ] {
            assert!(host(bad).is_err(), "{bad}");
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
    }
}
