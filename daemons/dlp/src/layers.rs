//! Decoding before matching: a secret sent base64'd, hex'd with dashes, percent-encoded inside
//! a JSON escape is the same secret. Each layer is scanned (token formats, known values,
//! validated detectors), then every way it can be decoded is peeled and scanned in turn,
//! to a bounded depth and a bounded number of decoded bytes.
//!
//! What is peeled:
//!
//! - whole-layer escapes: percent-encoding, JSON string escapes (`\uXXXX`, `\/`), `\xHH`;
//! - runs of an encoding's alphabet: hex (also with `-`, `:`, `,` or spaces between pairs),
//!   base32, base64 and base64url (also wrapped over lines, as MIME wraps it).
//!
//! A layer that still holds an encoded text layer at the deepest level is a finding of its own
//! (`encoded-too-deep`): an agent that wraps a secret once more than we peel is refused, not
//! passed.

use crate::detect;
use crate::runs::walk;
use crate::{Finding, Scanner};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Layers peeled below the one given: six encodings deep.
pub(crate) const MAX_DEPTH: usize = 6;

/// The shortest run worth decoding: shorter ones cannot hold a token of interest.
pub(crate) const MIN_ENCODED: usize = 16;

/// Decoded output shorter than this is not scanned: no secret is that short.
pub(crate) const MIN_DECODED: usize = 8;

/// The rule id of a layer decoded past [`MAX_DEPTH`] that still decodes to text.
pub const TOO_DEEP: &str = "encoded-too-deep";

/// The rule id of input whose decoding would exceed the byte budget.
pub const TOO_LARGE: &str = "decoded-too-large";

/// Decoded bytes a scan of `len` input bytes may produce in all: four times the input and a
/// mebibyte (a base64 image decodes to less than itself; a bomb runs out).
pub(crate) fn budget_for(len: usize) -> usize {
    len.saturating_mul(4).saturating_add(1 << 20)
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_allow_trailing_bits(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// One layer of a deep scan.
pub(crate) struct Peel<'s> {
    pub(crate) scanner: &'s Scanner,
    /// Rule ids passed over (the manifest's exceptions).
    pub(crate) skip: &'s dyn Fn(&str) -> bool,
    /// Decoded bytes still allowed.
    pub(crate) budget: usize,
}

impl Peel<'_> {
    /// The first finding in `hay` or in anything it decodes to. `depth` is 0 for the input
    /// itself, which is always treated as text.
    pub(crate) fn layer(&mut self, hay: &[u8], depth: usize) -> Option<Finding> {
        let skip = self.skip;
        if depth > 0 && !mostly_text(hay) {
            return self.binary(hay, depth);
        }
        if let Some(f) = self.scanner.scan_all_except(hay, skip).into_iter().next() {
            return Some(f);
        }
        if let Some(f) =
            detect::anchored(hay, skip).or_else(|| self.scanner.extra_finding(hay, skip))
        {
            return Some(f);
        }
        let walked = walk(hay, true, skip);
        if let Some(f) = walked.found {
            return Some(f);
        }
        for (name, decoded) in escapes(hay) {
            if let Some(f) = self.inner(&decoded, depth, name, 0, hay.len()) {
                return Some(f);
            }
        }
        for d in walked.decoded {
            if let Some(f) = self.inner(&d.bytes, depth, d.name, d.start, d.end) {
                return Some(f);
            }
        }
        None
    }

    /// A decoded layer that is not text: compressed data and UTF-16 are unpacked and peeled
    /// on, and every printable stretch is peeled as text (`\0…\0<base64>` hides nothing).
    fn binary(&mut self, hay: &[u8], depth: usize) -> Option<Finding> {
        // Random bytes (a digest, an image) can hold a token or a known value only as a
        // printable stretch at least as long as the shortest of them.
        let stretches = printable_stretches(hay, crate::MIN_KNOWN_LEN);
        if !stretches.is_empty()
            && let Some(f) = self
                .scanner
                .scan_all_except(hay, self.skip)
                .into_iter()
                .next()
        {
            return Some(f);
        }
        if depth < MAX_DEPTH {
            match unpacked(hay) {
                Some(Ok((name, inner))) => {
                    if let Some(f) = self.layer(&inner, depth + 1) {
                        return Some(wrapped(f, name, 0, hay.len()));
                    }
                }
                Some(Err(TooLarge)) => {
                    return Some(Finding {
                        rule: TOO_LARGE.to_string(),
                        start: 0,
                        end: hay.len(),
                    });
                }
                None => {}
            }
        }
        for &(start, end) in stretches.iter().filter(|(s, e)| e - s >= MIN_ENCODED) {
            if let Some(mut f) = self.layer(&hay[start..end], depth) {
                f.start += start;
                f.end += start;
                return Some(f);
            }
        }
        None
    }

    /// Scan a layer decoded from `hay[start..end]`; a finding is reported at that span.
    fn inner(
        &mut self,
        decoded: &[u8],
        depth: usize,
        name: &str,
        start: usize,
        end: usize,
    ) -> Option<Finding> {
        if decoded.len() < MIN_DECODED {
            return None;
        }
        let at = |rule: String| Some(Finding { rule, start, end });
        if decoded.len() > self.budget {
            return at(TOO_LARGE.to_string());
        }
        self.budget -= decoded.len();
        if depth + 1 > MAX_DEPTH {
            // Still text that decodes further: wrapped once more than we peel.
            let deeper = mostly_text(decoded)
                && (escapes(decoded).next().is_some()
                    || !walk(decoded, false, &|_| false).decoded.is_empty());
            return if deeper {
                at(TOO_DEEP.to_string())
            } else {
                None
            };
        }
        let found = self.layer(decoded, depth + 1)?;
        Some(wrapped(found, name, start, end))
    }
}

/// Whether `s` is text: a decoded layer of random bytes (an image, a digest) is scanned for
/// known values and token formats only, never decoded further or judged by shape.
pub(crate) fn mostly_text(s: &[u8]) -> bool {
    // Decided as soon as more than a tenth is not text, counted 64 bytes at a time: random
    // bytes get there a sixth of the way in (a decoded image is megabytes).
    let allowed = s.len() / 10;
    let mut other = 0;
    for block in s.chunks(64) {
        other += block.len() - crate::classify::text_mask(block).count_ones() as usize;
        if other > allowed {
            return false;
        }
    }
    true
}

/// `found` (in a layer decoded from `start..end`) as the outer layer reports it: at that span,
/// the innermost rule keeping its id and the layers saying how it was wrapped.
fn wrapped(found: Finding, name: &str, start: usize, end: usize) -> Finding {
    let rule = match found.rule.split_once(" (in ") {
        Some((id, rest)) => format!("{id} (in {name}, {rest}"),
        None => format!("{} (in {name})", found.rule),
    };
    Finding { rule, start, end }
}

/// What compressed data (gzip, zlib, zstd, by their magic) or UTF-16 text inside a decoded
/// layer unpacks to: `None` when it is neither (or does not unpack: random bytes may start
/// like gzip), `Err` when it unpacks past [`UNPACKED_MAX`].
fn unpacked(hay: &[u8]) -> Option<Result<(&'static str, Vec<u8>), TooLarge>> {
    use crate::content::{ContentError, decode_content};
    let Some(coding) = packed_as(hay) else {
        return utf16(hay).map(|t| Ok(("utf-16", t)));
    };
    match decode_content(hay, coding, UNPACKED_MAX) {
        Ok(out) => Some(Ok((coding, out))),
        Err(ContentError::TooLarge(_)) => Some(Err(TooLarge)),
        Err(_) => None,
    }
}

/// The compression whose magic `hay` starts with, if any.
fn packed_as(hay: &[u8]) -> Option<&'static str> {
    match hay {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [0x78, b, ..] if (0x7800u16 | u16::from(*b)).is_multiple_of(31) => Some("deflate"),
        _ => None,
    }
}

/// Whether decoded bytes can hold anything a layer of them would find: text, binary with a
/// printable stretch as long as the shortest secret, or data that unpacks. Random bytes (a
/// commit id or a digest, hex-decoded) hold nothing, and cost no layer and no copy.
pub(crate) fn may_hide(bytes: &[u8]) -> bool {
    mostly_text(bytes)
        || !printable_stretches(bytes, crate::MIN_KNOWN_LEN).is_empty()
        || packed_as(bytes).is_some()
        || utf16(bytes).is_some()
}

/// Compressed data inside a layer unpacks to at most this (then it is a finding): a tarball
/// an agent publishes is read whole, a bomb is not.
pub const UNPACKED_MAX: usize = 64 << 20;

/// Unpacking went past [`UNPACKED_MAX`].
struct TooLarge;

/// UTF-16 text (either byte order) as the ASCII it spells, when every other byte is zero.
fn utf16(hay: &[u8]) -> Option<Vec<u8>> {
    if hay.len() < 2 * MIN_ENCODED || !hay.len().is_multiple_of(2) {
        return None;
    }
    let le = hay.chunks(2).all(|c| c[1] == 0);
    let be = !le && hay.chunks(2).all(|c| c[0] == 0);
    match (le, be) {
        (true, false) => Some(hay.iter().step_by(2).copied().collect()),
        (false, true) => Some(hay.iter().skip(1).step_by(2).copied().collect()),
        _ => None,
    }
}

/// Maximal runs of printable bytes at least `min` long, as `(start, end)`.
fn printable_stretches(hay: &[u8], min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Printable bytes just before the current position.
    let mut len = 0usize;
    for (n, block) in hay.chunks(64).enumerate() {
        let bits = crate::classify::printable_mask(block);
        let full = block.len() == 64;
        if full && bits == u64::MAX {
            len += 64;
            continue;
        }
        // Random bytes (an image, a digest) are a third printable: nearly every block holds
        // no stretch that reaches `min`, and is passed over in a few instructions. (A short
        // last block's mask is clear past its end, so the test holds for it too.)
        if len + (bits.trailing_ones() as usize) < min && !has_ones(bits, min) {
            len = if full {
                bits.leading_ones() as usize
            } else {
                0
            };
            continue;
        }
        let base = n * 64;
        for i in 0..block.len() {
            let printable = bits >> i & 1 == 1;
            if !printable && len >= min {
                out.push((base + i - len, base + i));
            }
            len = if printable { len + 1 } else { 0 };
        }
    }
    if len >= min {
        out.push((hay.len() - len, hay.len()));
    }
    out
}

/// Whether `bits` (not all ones) holds `k` or more consecutive ones.
fn has_ones(bits: u64, k: usize) -> bool {
    if k > 64 {
        return false;
    }
    // After each step, bit `i` says bits `i..i + have` are all ones.
    let (mut run, mut have) = (bits, 1);
    while have < k && run != 0 {
        let step = (k - have).min(have);
        run &= run >> step;
        have += step;
    }
    run != 0
}

/// Whole-layer unescapings that change something, each with its name.
fn escapes(hay: &[u8]) -> impl Iterator<Item = (&'static str, Vec<u8>)> + '_ {
    // Whether each escape is there at all: a search for each, not a stop at every backslash,
    // since JSON's `\n` and `\"` come every few words of a model call.
    // Text with no backslash at all (most but JSON) costs one byte search.
    let from = memchr::memchr(b'\\', hay).unwrap_or(hay.len());
    let has = |needle: &[u8]| memchr::memmem::find(&hay[from..], needle).is_some();
    let json = has(b"\\u") || has(b"\\/");
    let hex = has(b"\\x");
    let percent = has_percent_escape(hay)
        .then(|| ("percent", percent_encoding::percent_decode(hay).collect()));
    let json = json.then(|| ("json-escape", json_unescape(hay)));
    let hex = hex.then(|| ("hex-escape", hex_unescape(hay)));
    [percent, json, hex].into_iter().flatten()
}

fn has_percent_escape(hay: &[u8]) -> bool {
    memchr::memchr_iter(b'%', hay).any(|i| {
        hay.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && hay.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    })
}

/// JSON string escapes resolved; what is not a valid escape is kept as it is.
fn json_unescape(hay: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i] == b'\\' && i + 1 < hay.len() {
            match hay[i + 1] {
                b'u' => {
                    if let Some(c) = hay
                        .get(i + 2..i + 6)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                    {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                        continue;
                    }
                }
                b'/' | b'"' | b'\\' => {
                    out.push(hay[i + 1]);
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(hay[i]);
        i += 1;
    }
    out
}

/// `\xHH` escapes resolved.
fn hex_unescape(hay: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i] == b'\\'
            && hay.get(i + 1) == Some(&b'x')
            && let Some(v) = hay.get(i + 2..i + 4).and_then(hex_byte)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(hay[i]);
        i += 1;
    }
    out
}

/// The byte two hex digits (either case) spell: one table load per digit, since every commit
/// id and digest in a body is decoded to be judged.
pub(crate) fn hex_byte(pair: &[u8]) -> Option<u8> {
    const VALUE: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut b = 0;
        while b < 256 {
            t[b] = match (b as u8 as char).to_digit(16) {
                Some(d) => d as u8,
                None => 0xff,
            };
            b += 1;
        }
        t
    };
    let (hi, lo) = (VALUE[usize::from(pair[0])], VALUE[usize::from(pair[1])]);
    // Both are digits exactly when neither has a high bit set.
    (hi | lo < 16).then_some(hi << 4 | lo)
}

/// RFC 4648 base32 without padding, trailing bits allowed (a run may be cut mid-symbol).
pub(crate) fn base32(upper: &[u8]) -> Option<Vec<u8>> {
    static SPEC: std::sync::LazyLock<data_encoding::Encoding> = std::sync::LazyLock::new(|| {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        spec.check_trailing_bits = false;
        spec.encoding().expect("a valid base32 alphabet")
    });
    let n = upper.len();
    let keep = n - n % 8
        + match n % 8 {
            2 | 3 => 2,
            4 => 4,
            5 | 6 => 5,
            7 => 7,
            _ => 0,
        };
    SPEC.decode(&upper[..keep]).ok()
}

#[cfg(test)]
mod tests;
