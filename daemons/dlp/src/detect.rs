//! Detectors with validators: formats that no literal anchor finds, each confirmed by a check
//! (a checksum, a decodable header, a secret-named key, the alphabet and entropy of the value)
//! so that clean text (digests, UUIDs, ids, prose) does not trip them.
//!
//! The run detectors ([`run_finding`], cards and IBANs in groups) are driven by the one pass
//! of [`crate::runs`]; JWTs and assignments are found from their own anchors here.

use crate::Finding;
use std::sync::LazyLock;

/// Shannon entropy of `s` in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

fn is_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

/// `8-4-4-4-12` hex: an identifier, never a secret by its shape.
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// A random-looking value: long, mixed alphabet, high entropy, and not a digest or a UUID.
///
/// `min_len` and `min_bits` are per channel: a subdomain label is shorter and lower case.
pub(crate) fn looks_random(s: &[u8], min_len: usize, min_bits: f64) -> bool {
    if s.len() < min_len || is_uuid(s) {
        return false;
    }
    // Hex of any length is a digest, an object id or a colour far more often than a secret; a
    // secret in hex is found by the layer that decodes it.
    if is_hex(s) {
        return false;
    }
    // Letters and digits both: random base62, base36 and base32 of this length nearly always
    // mix them; CamelCase names and prose rarely do.
    s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
        && entropy(s) >= min_bits
}

/// A finding for the run `start..end`.
fn found(rule: &str, start: usize, end: usize) -> Finding {
    Finding {
        rule: rule.to_string(),
        start,
        end,
    }
}

/// The first finding of a validated detector in `hay` (a text layer).
#[cfg(test)]
pub(crate) fn validated(hay: &[u8]) -> Option<Finding> {
    anchored(hay, &|_| false).or_else(|| crate::runs::walk(hay, true, &|_| false).found)
}

/// JWTs (from `eyJ`) and secret-named assignments (from `=` and `:`).
pub(crate) fn anchored(hay: &[u8], skip: &dyn Fn(&str) -> bool) -> Option<Finding> {
    static JWT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"eyJ"));
    for start in JWT.find_iter(hay).take_while(|_| !skip("jwt")) {
        // Glued to a longer run first: `eyJeyJeyJ…` must not cost a part scan per `eyJ`.
        let glued = start > 0
            && (hay[start - 1].is_ascii_alphanumeric() || matches!(hay[start - 1], b'-' | b'_'));
        if let Some(end) = (!glued).then(|| jwt_at(hay, start)).flatten() {
            return Some(found("jwt", start, end));
        }
    }
    if skip("secret-assignment") {
        return None;
    }
    assignment(hay)
}

/// What one run is, if it is something that must not leave.
pub(crate) fn run_finding(hay: &[u8], start: usize, end: usize) -> Option<Finding> {
    let run = &hay[start..end];
    if let Some(at) = twilio_key(run) {
        return Some(found("twilio-api-key", start + at, start + at + 34));
    }
    // A card in dashed groups is one run: `4111-1111-…`.
    if run.len() <= 23
        && run.contains(&b'-')
        && run
            .split(|&b| b == b'-')
            .all(|g| (1..=4).contains(&g.len()) && g.iter().all(u8::is_ascii_digit))
    {
        let digits: Vec<u8> = run.iter().copied().filter(|&b| b != b'-').collect();
        if (13..=19).contains(&digits.len()) && card(&digits) {
            return Some(found("payment-card", start, end));
        }
    }
    if run.iter().all(u8::is_ascii_digit) && (13..=19).contains(&run.len()) && card(run) {
        return Some(found("payment-card", start, end));
    }
    if iban(run) {
        return Some(found("iban", start, end));
    }
    if let Some(rule) = wallet(run) {
        return Some(found(rule, start, end));
    }
    None
}

/// Where a Twilio API key (`SK` and 32 lower-case hex digits, not glued to a word) starts in
/// `run`. Two common capitals make a poor automaton anchor (it would defeat the prefilter for
/// every other rule), so the key is looked for here, in runs long enough to hold one.
fn twilio_key(run: &[u8]) -> Option<usize> {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    memchr::memchr_iter(b'S', run).find(|&i| {
        run.get(i + 1) == Some(&b'K')
            && (i == 0 || !word(&run[i - 1]))
            && run.get(i + 2..i + 34).is_some_and(|h| {
                h.iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            })
            && run.get(i + 34).is_none_or(|b| !word(b))
    })
}

/// Whether `header` is base64url of a JSON object with an `alg` member.
fn decoded_json_header(header: &[u8]) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.strip_suffix(b"=").unwrap_or(header))
    else {
        return false;
    };
    bytes.starts_with(b"{") && bytes.windows(5).any(|w| w == b"\"alg\"")
}

/// The longest JWT part looked at.
const JWT_PART_MAX: usize = 16 << 10;

/// A JWT starting at `start`: three base64url parts joined by dots, a JSON header.
pub(crate) fn jwt_at(hay: &[u8], start: usize) -> Option<usize> {
    let b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut i = start;
    let mut parts = Vec::with_capacity(3);
    for n in 0..3 {
        let s = i;
        // A part longer than this is no token's (and scanning on would cost the run's length).
        while i < hay.len() && b64url(hay[i]) && i - s < JWT_PART_MAX {
            i += 1;
        }
        if i - s < if n == 2 { 16 } else { 8 } {
            return None;
        }
        parts.push(s..i);
        if n < 2 {
            if hay.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    decoded_json_header(&hay[parts[0].clone()]).then_some(i)
}

/// Luhn's checksum on a digit string, with a known card issuer prefix.
pub(crate) fn card(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let d = |i: usize| u32::from(digits[i] - b'0');
    let iin2 = d(0) * 10 + d(1);
    let iin4 = iin2 * 100 + d(2) * 10 + d(3);
    let issuer = match digits.len() {
        16 => {
            d(0) == 4
                || (51..=55).contains(&iin2)
                || (2221..=2720).contains(&iin4)
                || iin4 == 6011
                || iin2 == 65
        }
        15 => iin2 == 34 || iin2 == 37,
        13 | 19 => d(0) == 4,
        _ => false,
    };
    // The issuers' published test numbers (4111 1111 1111 1111, 4242…, 5555…4444) repeat
    // two or three digits; they fill fixtures and docs and are no one's card.
    let mut seen = [false; 10];
    for &b in digits {
        seen[usize::from(b - b'0')] = true;
    }
    if !issuer || seen.iter().filter(|&&x| x).count() <= 3 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let v = u32::from(b - b'0');
            if i % 2 == 1 {
                let w = v * 2;
                if w > 9 { w - 9 } else { w }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: two letters, two check digits, a country-specific length, mod-97 == 1.
pub(crate) fn iban(s: &[u8]) -> bool {
    if !(15..=34).contains(&s.len())
        || !s[..2].iter().all(u8::is_ascii_uppercase)
        || !s[2..4].iter().all(u8::is_ascii_digit)
        || !s[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let Some(len) = iban_length(&s[..2]) else {
        return false;
    };
    if s.len() != len {
        return false;
    }
    let mut rem = 0u32;
    for &b in s[4..].iter().chain(&s[..4]) {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The IBAN length of the commonest SEPA and nearby countries (a wrong length is no IBAN).
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"AT" | b"EE" | b"LT" | b"LU" | b"KZ" | b"XK" | b"BA" => 20,
        b"BE" => 16,
        b"CH" | b"LI" | b"LV" | b"HR" => 21,
        b"CZ" | b"ES" | b"SE" | b"SK" | b"TN" | b"RO" | b"PK" | b"MD" | b"VG" => 24,
        b"DE" | b"IE" | b"ME" | b"RS" | b"GB" | b"BG" | b"BH" => 22,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"FR" | b"MC" | b"GR" | b"IT" | b"SM" => 27,
        b"NO" => 15,
        b"PL" | b"CY" | b"HU" => 28,
        b"PT" => 25,
        b"SI" | b"MK" => 19,
        b"IS" | b"TR" => 26,
        b"MT" => 31,
        b"SA" | b"IL" | b"AE" => 23,
        _ => return None,
    })
}

/// Crypto wallet keys and addresses: base58check (WIF keys, P2PKH/P2SH addresses), bech32
/// (segwit addresses and keys) and EIP-55 checksummed Ethereum addresses.
fn wallet(run: &[u8]) -> Option<&'static str> {
    if let Some(hex) = run.strip_prefix(b"0x")
        && hex.len() == 40
        && is_hex(hex)
        && eip55(hex)
    {
        return Some("ethereum-address");
    }
    // Base58 has no 0, O, I or l, and the keys and addresses we look for start with one of
    // five characters: most runs fail here, before any decoding.
    /// Base58's alphabet, as a table: every long run of a body that starts like a key
    /// comes through here.
    static BASE58: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() && !matches!(c, b'0' | b'O' | b'I' | b'l');
            b += 1;
        }
        t
    };
    let base58 = |b: &u8| BASE58[usize::from(*b)];
    if (26..=52).contains(&run.len())
        && matches!(run[0], b'1' | b'3' | b'5' | b'K' | b'L')
        && run.iter().all(base58)
        && let Ok(bytes) = bs58::decode(run).with_check(None).into_vec()
    {
        return match (bytes.first(), bytes.len()) {
            (Some(0x80), 33 | 34) => Some("wallet-private-key"),
            (Some(0x00 | 0x05), 21) => Some("bitcoin-address"),
            _ => None,
        };
    }
    // Checked without a copy: every long run of a body comes through here.
    let segwit = run
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"bc1") || p.eq_ignore_ascii_case(b"tb1"));
    if !segwit || run.len() > 90 {
        return None;
    }
    let lower = run.to_ascii_lowercase();
    if (run == lower.as_slice() || run == run.to_ascii_uppercase().as_slice())
        && let Ok(s) = std::str::from_utf8(&lower)
        && bech32::segwit::decode(s).is_ok()
    {
        return Some("bitcoin-address");
    }
    None
}

/// EIP-55: a mixed-case address whose case follows the Keccak hash of its lower-case hex.
///
/// An all-lower or all-upper address carries no checksum: too like any other 40-hex id (a git
/// object id) to call a wallet.
fn eip55(hex: &[u8]) -> bool {
    use sha3::{Digest, Keccak256};
    let has_upper = hex.iter().any(u8::is_ascii_uppercase);
    let has_lower = hex.iter().any(u8::is_ascii_lowercase);
    if !(has_upper && has_lower) {
        return false;
    }
    let lower = hex.to_ascii_lowercase();
    let hash = Keccak256::digest(&lower);
    hex.iter().enumerate().all(|(i, &c)| {
        if !c.is_ascii_alphabetic() {
            return true;
        }
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
        (nibble >= 8) == c.is_ascii_uppercase()
    })
}

/// Key words that make `NAME=value` (or `"name": "value"`, or a header) a secret assignment.
const SECRET_KEYS: &[&[u8]] = &[
    b"SECRET",
    b"TOKEN",
    b"PASSWORD",
    b"PASSWD",
    b"PASSPHRASE",
    b"APIKEY",
    b"API_KEY",
    b"ACCESSKEY",
    b"ACCESS_KEY",
    b"PRIVATEKEY",
    b"PRIVATE_KEY",
    b"ACCOUNTKEY",
    b"CREDENTIAL",
    b"AUTH_KEY",
    b"SIGNING_KEY",
    b"SESSION_KEY",
    b"MASTER_KEY",
];

/// Key words of names that carry tokens meant to travel: paging cursors, CSRF pairs, counts.
const TRAVELLING_KEYS: &[&[u8]] = &[
    b"PAGE_TOKEN",
    b"PAGETOKEN",
    b"NEXT_TOKEN",
    b"SYNC_TOKEN",
    b"CSRF",
    b"XSRF",
    b"TOKENS",
    b"TOKEN_TYPE",
    b"TOKEN_COUNT",
];

/// Words looked for in a key or a value, as one automaton: one pass rather than a slice
/// compare per word and position, since a key is judged at every `=` and `:` of a body.
struct Words(aho_corasick::dfa::DFA);

impl Words {
    /// The automaton finding any of `list` (in any ASCII case when `any_case`).
    fn new(list: &[&[u8]], any_case: bool) -> Words {
        // A DFA walked byte by byte: the haystacks are a key or a value, at most a few hundred
        // bytes, where a prefilter's set-up costs more than it skips.
        let dfa = aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(any_case)
            .prefilter(false)
            .build(list)
            .expect("a few static words build");
        Words(dfa)
    }

    /// Whether `hay` holds any of the words. The states are walked here: a search through the
    /// general interface costs some hundred instructions to set up, more than a key's walk.
    fn found_in(&self, hay: &[u8]) -> bool {
        use aho_corasick::automaton::Automaton;
        let dfa = &self.0;
        let Ok(mut sid) = dfa.start_state(aho_corasick::Anchored::No) else {
            return false;
        };
        for &b in hay {
            sid = dfa.next_state(aho_corasick::Anchored::No, sid, b);
            if dfa.is_special(sid) {
                if dfa.is_match(sid) {
                    return true;
                }
                if dfa.is_dead(sid) {
                    return false;
                }
            }
        }
        false
    }
}

/// The stems every one of [`SECRET_KEYS`] holds (a test checks it).
const SECRET_STEMS: &[&[u8]] = &[b"KEY", b"SECRET", b"TOKEN", b"PASS", b"CREDENTIAL"];

/// Whether a key, in any case, holds one of [`SECRET_STEMS`]: one pass over the key as it is
/// in the body, which rejects nearly every key (`content`, `Config`, `parser.rs`) before it is
/// copied and the automata run.
fn has_secret_stem(key: &[u8]) -> bool {
    // One load per byte: only where a stem could start is it compared, and only the one stem
    // that starts with that letter (their first letters differ: a test checks it).
    static STEM_STARTING: [u8; 256] = {
        let mut t = [0; 256];
        let mut i = 0;
        while i < SECRET_STEMS.len() {
            let first = SECRET_STEMS[i][0];
            t[first as usize] = i as u8 + 1;
            t[first.to_ascii_lowercase() as usize] = i as u8 + 1;
            i += 1;
        }
        t
    };
    (0..key.len()).any(|i| match STEM_STARTING[usize::from(key[i])] {
        0 => false,
        n => {
            let stem = SECRET_STEMS[usize::from(n - 1)];
            key.get(i..i + stem.len())
                .is_some_and(|at| at.eq_ignore_ascii_case(stem))
        }
    })
}

/// Whether a key (identifier, header name) names a secret.
pub(crate) fn secret_name(key: &[u8]) -> bool {
    // The stems hold no `_`, so the key's `-` and `.` (read as `_` below) cannot hide one.
    (5..=64).contains(&key.len()) && has_secret_stem(key) && stemmed_secret_name(key)
}

/// [`secret_name`] for a key of 5 to 64 bytes that holds a stem.
fn stemmed_secret_name(key: &[u8]) -> bool {
    static SECRET: LazyLock<Words> = LazyLock::new(|| Words::new(SECRET_KEYS, false));
    static TRAVELLING: LazyLock<Words> = LazyLock::new(|| Words::new(TRAVELLING_KEYS, false));
    let mut buf = [0u8; 64];
    for (d, &b) in buf.iter_mut().zip(key) {
        *d = if b == b'-' || b == b'.' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        };
    }
    let upper = &buf[..key.len()];
    SECRET.found_in(upper) && !TRAVELLING.found_in(upper)
}

/// Whether a value assigned to a secret-named key is a real secret, not a placeholder or a
/// reference (`${VAR}`, `<token>`, `process.env.X`, `changeme`).
#[inline(never)] // off the walk over every `=` and `:`: inlined, it slowed that loop by a tenth
pub(crate) fn secret_value(v: &[u8]) -> bool {
    if v.len() < 12 || v.len() > VALUE_MAX || v.iter().any(|b| b.is_ascii_whitespace()) {
        return false;
    }
    static PLACEHOLDER: LazyLock<Words> = LazyLock::new(|| {
        Words::new(
            &[
                b"${",
                b"<",
                b"{{",
                b"xxxx",
                b"****",
                b"changeme",
                b"example",
                b"your_",
                b"your-",
                b"redacted",
                b"process.env",
                b"os.environ",
                b"env(",
            ],
            true,
        )
    });
    // The byte tests first: most values assigned in code (`std::env::var(`) have no digit.
    v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_alphabetic)
        && !PLACEHOLDER.found_in(v)
        && entropy(v) >= 3.0
}

/// The longest assigned value judged.
const VALUE_MAX: usize = 512;

/// `NAME=value`, `NAME: value`, `"name": "value"` with a secret-named key and a real value.
fn assignment(hay: &[u8]) -> Option<Finding> {
    // A key's bytes, one load each: the backward walk over every key of a body is hot.
    static KEY_BYTE: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
            b += 1;
        }
        t
    };
    let ident = |b: u8| KEY_BYTE[usize::from(b)];
    let value_byte = |b: u8| {
        !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | b',' | b';' | b'&' | b'}' | b'`')
    };
    // Each byte is looked at a bounded number of times: keys at most 64 (and 8 blanks) to the
    // left, values at most VALUE_MAX to the right and never twice.
    let mut scanned_to = 0;
    for at in crate::classify::either_positions(hay, b'=', b':') {
        if at < scanned_to {
            continue;
        }
        // The key: an identifier just left of the operator, maybe quoted.
        let mut k_end = at;
        while k_end > 0 && at - k_end < 8 && matches!(hay[k_end - 1], b' ' | b'\t') {
            k_end -= 1;
        }
        if k_end > 0 && matches!(hay[k_end - 1], b'"' | b'\'') {
            k_end -= 1;
        }
        let mut k_start = k_end;
        while k_start > 0 && ident(hay[k_start - 1]) && k_end - k_start < 65 {
            k_start -= 1;
        }
        if k_start == k_end || !secret_name(&hay[k_start..k_end]) {
            continue;
        }
        let mut v_start = at + 1;
        while v_start < hay.len()
            && v_start - at <= 8
            && matches!(hay[v_start], b' ' | b'\t' | b'"' | b'\'')
        {
            v_start += 1;
        }
        let mut v_end = v_start;
        while v_end < hay.len() && value_byte(hay[v_end]) && v_end - v_start < VALUE_MAX {
            v_end += 1;
        }
        scanned_to = v_end;
        if secret_value(&hay[v_start..v_end]) {
            return Some(found("secret-assignment", k_start, v_end));
        }
    }
    None
}

#[cfg(test)]
mod tests;
