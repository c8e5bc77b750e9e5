//! The byte strings a known secret can leave as: raw and in the encodings HTTP clients apply.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Values shorter than this are not matched: they would turn up in clean text too often.
pub const MIN_KNOWN_LEN: usize = 8;

/// Every form of `value` worth matching, each with the label suffix its finding carries.
///
/// Forms may repeat (hex of digits is the same in both cases); the caller deduplicates.
pub(crate) fn forms(value: &[u8]) -> Vec<(Vec<u8>, &'static str)> {
    let mut out = vec![(value.to_vec(), "")];
    for core in base64_cores(&STANDARD_NO_PAD, value) {
        out.push((core, " (base64)"));
    }
    for core in base64_cores(&URL_SAFE_NO_PAD, value) {
        out.push((core, " (base64url)"));
    }
    out.push((hex(value, b"0123456789abcdef"), " (hex)"));
    out.push((hex(value, b"0123456789ABCDEF"), " (hex)"));
    for digits in [b"0123456789ABCDEF", b"0123456789abcdef"] {
        let pct = percent(value, digits);
        if pct != value {
            out.push((pct, " (percent-encoded)"));
        }
    }
    out
}

/// The base64 characters that depend on `value` alone, for each of the three alignments it can
/// have inside a longer encoded blob (`Basic base64(user:token)` puts it after a prefix).
///
/// The first and last characters of each alignment also carry bits of the neighbouring bytes, so
/// they are left out; padding is left out with them. A value encoded on its own (padded or not)
/// therefore matches its alignment-0 core, which spans all but its last few characters.
fn base64_cores(engine: &impl Engine, value: &[u8]) -> Vec<Vec<u8>> {
    (0..3usize)
        .filter_map(|shift| {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let encoded = engine.encode(&shifted).into_bytes();
            // Character i covers bits 6i..6i+6; the value covers bits 8*shift..8*(shift+len).
            let first = (8 * shift).div_ceil(6);
            let last = (8 * shift + 8 * value.len()) / 6;
            encoded.get(first..last).map(<[u8]>::to_vec)
        })
        .collect()
}

/// `value` as hex digits from `digits`.
fn hex(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    value
        .iter()
        .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

/// `value` percent-encoded as a URL component: everything but RFC 3986 unreserved bytes escaped.
fn percent(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}
