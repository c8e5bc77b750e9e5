//! The channels that are short values rather than text: a URL's path segments and query
//! values, a request header, the labels of a host under a wildcard route. Besides the deep
//! scan every channel gets, a value here is also judged by its shape: a long random-looking
//! value in a place that names things is how an encoded secret leaves when no format fits.

use crate::detect::{looks_random, secret_name, secret_value};
use crate::{Finding, Inspector, Scanner};

/// A value piece shorter than this is not judged by its entropy.
const VALUE_MIN_LEN: usize = 20;
/// Bits per byte a value piece needs to look random (random base62 of 20 has about 4.0).
const VALUE_MIN_BITS: f64 = 3.6;
/// A host label is shorter and single-case: base32 or base36 of a secret.
const LABEL_MIN_LEN: usize = 16;
const LABEL_MIN_BITS: f64 = 3.3;

/// Query keys whose values are opaque tokens by design and travel back to their issuer.
const OPAQUE_KEYS: &[&str] = &[
    "cursor",
    "after",
    "before",
    "page",
    "page_token",
    "pagetoken",
    "next",
    "continuation",
    "etag",
    "state",
];

impl Inspector<'_> {
    /// A URL's path and query: the whole (every layer), then each path segment and query value.
    pub fn inspect_url(&self, path_and_query: &str) -> Option<Finding> {
        if let Some(f) = self.inspect(path_and_query.as_bytes()) {
            return Some(f);
        }
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut offset = 0;
        for segment in path.split('/') {
            if let Some(f) =
                random_value(segment, offset, "high-entropy-path").filter(|f| !self.skips(&f.rule))
            {
                return Some(f);
            }
            offset += segment.len() + 1;
        }
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or(("", pair));
            let key = decode(key);
            let at = offset + key.len() + 1;
            if secret_name(key.as_bytes())
                && secret_value(decode(value).as_bytes())
                && !self.skips("secret-assignment")
            {
                return Some(finding("secret-assignment", at, at + value.len()));
            }
            if !OPAQUE_KEYS.contains(&key.to_ascii_lowercase().as_str())
                && let Some(f) = random_value(value, at, "high-entropy-query")
                && !self.skips(&f.rule)
            {
                return Some(f);
            }
            offset += pair.len() + 1;
        }
        None
    }

    /// One request header, `injected` when egress replaces it with the route's credential (the
    /// agent's copy is dropped, so only a deep scan applies).
    pub fn inspect_header(&self, name: &str, value: &[u8], injected: bool) -> Option<Finding> {
        if let Some(f) = self.inspect(value) {
            return Some(f);
        }
        if injected {
            return None;
        }
        let text = String::from_utf8_lossy(value);
        let lower = name.to_ascii_lowercase();
        if lower == "authorization" {
            let (scheme, credential) = text.trim().split_once(' ').unwrap_or(("", text.trim()));
            let credential = if scheme.eq_ignore_ascii_case("basic") {
                basic_password(credential).unwrap_or_else(|| credential.to_string())
            } else {
                credential.to_string()
            };
            return (credential_like(&credential) && !self.skips("bearer-token"))
                .then(|| finding("bearer-token", 0, value.len()));
        }
        if lower == "cookie" {
            let mut offset = 0;
            for pair in text.split(';') {
                let (_, v) = pair.split_once('=').unwrap_or(("", pair));
                // A cookie's value is the site's own format; only a random-looking one tells.
                if looks_random(decode(v.trim()).as_bytes(), 16, VALUE_MIN_BITS)
                    && !self.skips("cookie-value")
                {
                    return Some(finding("cookie-value", offset, offset + pair.len()));
                }
                offset += pair.len() + 1;
            }
            return None;
        }
        (secret_name(name.as_bytes())
            && credential_like(text.trim())
            && !self.skips("secret-header"))
        .then(|| finding("secret-header", 0, value.len()))
    }

    /// The labels of a host left of a wildcard route's suffix (`a.b` of `a.b.example.com` under
    /// `*.example.com`): each label, and all of them joined (a secret split across labels).
    pub fn inspect_labels(&self, labels: &str) -> Option<Finding> {
        let mut offset = 0;
        for label in labels.split('.') {
            if looks_random(label.as_bytes(), LABEL_MIN_LEN, LABEL_MIN_BITS)
                && !self.skips("high-entropy-label")
            {
                return Some(finding("high-entropy-label", offset, offset + label.len()));
            }
            offset += label.len() + 1;
        }
        let joined: String = labels.split('.').collect();
        self.inspect(joined.as_bytes())
            .or_else(|| self.inspect(joined.to_ascii_uppercase().as_bytes()))
            .map(|mut f| {
                f.start = 0;
                f.end = labels.len();
                f
            })
    }
}

impl Scanner {
    /// [`Inspector::inspect_url`] with no exceptions.
    pub fn inspect_url(&self, path_and_query: &str) -> Option<Finding> {
        self.inspector(&|_| false).inspect_url(path_and_query)
    }

    /// [`Inspector::inspect_header`] with no exceptions.
    pub fn inspect_header(&self, name: &str, value: &[u8], injected: bool) -> Option<Finding> {
        self.inspector(&|_| false)
            .inspect_header(name, value, injected)
    }

    /// [`Inspector::inspect_labels`] with no exceptions.
    pub fn inspect_labels(&self, labels: &str) -> Option<Finding> {
        self.inspector(&|_| false).inspect_labels(labels)
    }
}

/// A credential the agent made up or found: a secret-looking value, not a word.
fn credential_like(v: &str) -> bool {
    secret_value(v.as_bytes()) || looks_random(v.as_bytes(), 16, VALUE_MIN_BITS)
}

/// The password of a `Basic` credential.
fn basic_password(b64: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A random-looking piece of a (percent-decoded) value, reported at the raw value's span.
fn random_value(raw: &str, offset: usize, rule: &str) -> Option<Finding> {
    let value = decode(raw);
    value
        .split(['-', '_', '.', '~', '+', ' ', ':', ',', '/', '='])
        .any(|piece| looks_random(piece.as_bytes(), VALUE_MIN_LEN, VALUE_MIN_BITS))
        .then(|| finding(rule, offset, offset + raw.len()))
}

fn finding(rule: &str, start: usize, end: usize) -> Finding {
    Finding {
        rule: rule.to_string(),
        start,
        end,
    }
}

#[cfg(test)]
mod tests;
