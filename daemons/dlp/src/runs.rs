//! One pass over a layer: its runs (maximal stretches of token bytes, `[A-Za-z0-9+/=_-]`),
//! each judged once, and the short runs that only mean something in a sequence followed as
//! they come (a card in groups of four, an IBAN in groups, hex pairs between delimiters,
//! base64 wrapped over lines). Clean text costs a few vector compares per 16 bytes (see
//! [`crate::classify`]) and a few compares per word, whatever the number of detectors; the
//! encoded runs found are decoded here for the caller to peel.

use crate::Finding;
use crate::classify::run_mask;
use crate::detect::{card, iban, run_finding};
use crate::layers::{B64, B64URL, MIN_DECODED, MIN_ENCODED, base32, hex_byte, may_hide};
use base64::Engine;

/// The runs of a layer, in order, found sixty-four bytes at a time: each block's bytes are
/// classified into one bit mask ([`run_mask`]) whose edges (where a run starts or ends) are
/// popped one bit scan each, instead of a branch per byte, which the boundaries of short
/// words mispredict (this was the walk's hottest loop on clean text).
struct Runs<'h> {
    hay: &'h [u8],
    /// The start of the block `edges` is of.
    base: usize,
    /// The next block to classify.
    next_block: usize,
    /// The edges of the current block not yet popped: bit `i` set where the byte at
    /// `base + i` differs in class from the one before it.
    edges: u64,
    /// Whether the last byte of the previous block was a run byte.
    carry: bool,
}

impl<'h> Runs<'h> {
    fn new(hay: &'h [u8]) -> Self {
        Runs {
            hay,
            base: 0,
            next_block: 0,
            edges: 0,
            carry: false,
        }
    }

    /// The next position where a run starts or ends; they alternate, a start first.
    // Always: the bundle's size-optimised link left it a call per edge.
    #[inline(always)]
    fn edge(&mut self) -> Option<usize> {
        loop {
            if self.edges != 0 {
                let at = self.base + self.edges.trailing_zeros() as usize;
                self.edges &= self.edges - 1;
                return Some(at);
            }
            let n = self.hay.len();
            if self.next_block >= n {
                return None;
            }
            let block = &self.hay[self.next_block..n.min(self.next_block + 64)];
            let mask = run_mask(block);
            // A short last block has clear bits past its end: a run open there ends at `n`.
            self.edges = mask ^ (mask << 1 | u64::from(self.carry));
            self.carry = mask >> 63 == 1;
            self.base = self.next_block;
            self.next_block += 64;
        }
    }
}

impl Iterator for Runs<'_> {
    type Item = (usize, usize);

    #[inline]
    fn next(&mut self) -> Option<(usize, usize)> {
        let start = self.edge()?;
        let end = self.edge().unwrap_or(self.hay.len());
        Some((start, end))
    }
}

/// A span of the layer that decodes, decoded.
pub(crate) struct Decoded {
    /// The encoding (`base64`, `hex`, …).
    pub(crate) name: &'static str,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) bytes: Vec<u8>,
}

/// What one pass saw.
#[derive(Default)]
pub(crate) struct Walked {
    /// The first validated finding (cards, IBANs, wallets).
    pub(crate) found: Option<Finding>,
    /// Every span that decodes.
    pub(crate) decoded: Vec<Decoded>,
}

/// Walk `hay`; `detect` runs the validated detectors too (on text layers).
pub(crate) fn walk(hay: &[u8], detect: bool, skip: &dyn Fn(&str) -> bool) -> Walked {
    let mut out = Walked::default();
    let mut cards = Groups::new(|r| r.iter().all(u8::is_ascii_digit));
    let mut ibans = Groups::new(|r| {
        r.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    let mut pairs = HexPairs::default();
    let mut lines = Wrapped::default();
    let n = hay.len();
    let mut runs = Runs::new(hay);
    let mut prev_end = 0;
    loop {
        let next = runs.next();
        let done = next.is_none();
        let (start, end) = next.unwrap_or((n, n));
        let gap = &hay[prev_end..start];
        let run = &hay[start..end];
        prev_end = end;
        // The trackers see a run only when it could start or continue their sequence: most
        // words of clean text are none of their business.
        let short = run.len() <= 4;
        let first = run.first().copied().unwrap_or(0);
        if detect && out.found.is_none() {
            if run.len() >= 13 {
                out.found = run_finding(hay, start, end).filter(|f| !skip(&f.rule));
            }
            if ((short && first.is_ascii_digit()) || cards.count > 0 || done)
                && let Some((s, e, digits)) = cards.push(hay, gap, (start, end), done)
                && (13..=19).contains(&digits.len())
                && card(&digits)
                && !skip("payment-card")
            {
                out.found.get_or_insert(found("payment-card", s, e));
            }
            if ((short && (first.is_ascii_uppercase() || first.is_ascii_digit()))
                || ibans.count > 0
                || done)
                && let Some((s, e, chars)) = ibans.push(hay, gap, (start, end), done)
                && iban(&chars)
                && !skip("iban")
            {
                out.found.get_or_insert(found("iban", s, e));
            }
        }
        if ((run.len() == 2 && first.is_ascii_hexdigit()) || !pairs.bytes.is_empty() || done)
            && let Some((s, e, bytes)) = pairs.push(gap, start, end, run, done)
        {
            out.decoded.push(Decoded {
                name: "hex",
                start: s,
                end: e,
                bytes,
            });
        }
        if (lines.wants(run) || done)
            && let Some((s, e, joined)) = lines.push(gap, start, end, run, done)
            && let Ok(bytes) = B64.decode(trim_padding(&joined))
        {
            out.decoded.push(Decoded {
                name: "base64",
                start: s,
                end: e,
                bytes,
            });
        }
        if done {
            return out;
        }
        if run.len() >= MIN_ENCODED && worth_decoding(run) {
            let whole = [(0, run.len())];
            let split;
            let pieces: &[(usize, usize)] =
                if trim_padding(run).iter().any(|b| b"=/+-_".contains(b)) {
                    split = pieces(run);
                    &split
                } else {
                    &whole
                };
            for &(ps, pe) in pieces {
                for (name, bytes) in decodings(&run[ps..pe]) {
                    if bytes.len() >= MIN_DECODED {
                        out.decoded.push(Decoded {
                            name,
                            start: start + ps,
                            end: start + pe,
                            bytes,
                        });
                    }
                }
            }
        }
    }
}

fn found(rule: &str, start: usize, end: usize) -> Finding {
    Finding {
        rule: rule.to_string(),
        start,
        end,
    }
}

fn trim_padding(s: &[u8]) -> &[u8] {
    &s[..s.len() - s.iter().rev().take_while(|&&b| b == b'=').count()]
}

/// Groups of four joined by single spaces (`4111 1111 …`, `DE89 3704 …`); the last may be
/// shorter. Yields `(start, end, joined)` when a sequence of two or more groups ends.
///
/// Only positions are kept while a sequence grows: a short number in prose starts one, and
/// nearly all end at one group, so the groups are joined only when a sequence completes.
struct Groups {
    class: fn(&[u8]) -> bool,
    start: usize,
    end: usize,
    count: usize,
    last_len: usize,
}

impl Groups {
    fn new(class: fn(&[u8]) -> bool) -> Self {
        Groups {
            class,
            start: 0,
            end: 0,
            count: 0,
            last_len: 0,
        }
    }

    fn push(
        &mut self,
        hay: &[u8],
        gap: &[u8],
        (start, end): (usize, usize),
        done: bool,
    ) -> Option<(usize, usize, Vec<u8>)> {
        let run = &hay[start..end];
        let fits = !done && !run.is_empty() && run.len() <= 4 && (self.class)(run);
        if fits && self.count > 0 && self.last_len == 4 && gap == b" " {
            self.count += 1;
            self.end = end;
            self.last_len = run.len();
            return None;
        }
        let finished = (self.count >= 2).then(|| {
            let joined = hay[self.start..self.end]
                .iter()
                .copied()
                .filter(|&b| b != b' ')
                .collect();
            (self.start, self.end, joined)
        });
        self.count = 0;
        if fits {
            (self.start, self.end, self.count, self.last_len) = (start, end, 1, run.len());
        }
        finished
    }
}

/// Hex pairs joined by one delimiter (`41:4b:…`, `41 4b …`, `41,4b,…`), eight or more.
#[derive(Default)]
struct HexPairs {
    sep: Option<u8>,
    start: usize,
    end: usize,
    bytes: Vec<u8>,
}

impl HexPairs {
    fn push(
        &mut self,
        gap: &[u8],
        start: usize,
        end: usize,
        run: &[u8],
        done: bool,
    ) -> Option<(usize, usize, Vec<u8>)> {
        let pair = (!done && run.len() == 2).then(|| hex_byte(run)).flatten();
        if let Some(b) = pair
            && !self.bytes.is_empty()
            && gap.len() == 1
            && matches!(gap[0], b':' | b' ' | b',')
            && self.sep.is_none_or(|s| s == gap[0])
        {
            self.sep = Some(gap[0]);
            self.bytes.push(b);
            self.end = end;
            return None;
        }
        let finished = (self.bytes.len() >= MIN_DECODED)
            .then(|| (self.start, self.end, std::mem::take(&mut self.bytes)));
        self.bytes.clear();
        self.sep = None;
        if let Some(b) = pair {
            self.bytes.push(b);
            (self.start, self.end) = (start, end);
        }
        finished
    }
}

/// base64 wrapped over lines of one width (a multiple of four: MIME's 76, PEM's 64, `base64
/// -w N`), joined; the lines may be split by a newline or, inside a JSON string, by `\n`.
#[derive(Default)]
struct Wrapped {
    width: usize,
    start: usize,
    end: usize,
    joined: Vec<u8>,
    lines: usize,
    open: bool,
}

/// The narrowest wrapping followed.
const WRAP_MIN: usize = 16;
/// The widest.
const WRAP_MAX: usize = 128;

impl Wrapped {
    /// Whether a run could start or continue a wrapped block (cheap; guards [`Wrapped::push`]).
    fn wants(&self, run: &[u8]) -> bool {
        self.open || (WRAP_MIN..=WRAP_MAX).contains(&run.len())
    }

    fn push(
        &mut self,
        gap: &[u8],
        start: usize,
        end: usize,
        run: &[u8],
        done: bool,
    ) -> Option<(usize, usize, Vec<u8>)> {
        // The line itself: a run after a JSON `\n` starts with that `n`.
        let (newline, line) = match (gap, run.split_first()) {
            (b"\n" | b"\r\n", _) => (true, run),
            (b"\\", Some((b'n', rest))) => (true, rest),
            _ => (false, run),
        };
        if !done && self.open && newline && !line.is_empty() && line.len() <= self.width {
            self.joined.extend_from_slice(line);
            self.lines += 1;
            self.end = end;
            // A shorter line is the last one.
            self.open = line.len() == self.width;
            if self.open {
                return None;
            }
        }
        let finished =
            (self.lines >= 2).then(|| (self.start, self.end, std::mem::take(&mut self.joined)));
        self.joined.clear();
        self.lines = 0;
        self.open = false;
        if !done
            && (WRAP_MIN..=WRAP_MAX).contains(&run.len())
            && run.len().is_multiple_of(4)
            && finished.is_none()
        {
            self.joined.extend_from_slice(run);
            (self.width, self.start, self.end, self.lines, self.open) =
                (run.len(), start, end, 1, true);
        }
        finished
    }
}

/// Whether any piece of `run` could decode: dashed hex, or a stretch of sixteen letters
/// and digits between separators (`parse_manifest_from_reader` and `/serde_yaml/fn` have none).
/// Most long runs of clean text fail here, before any allocation.
fn worth_decoding(run: &[u8]) -> bool {
    // Dashed hex (`67-68-70-…`), alone or after a prefix (`q=67-68-…`).
    if run.iter().filter(|&&b| b == b'-').count() >= 7 {
        return true;
    }
    let mut stretch = 0;
    for &b in run {
        if b.is_ascii_alphanumeric() {
            stretch += 1;
            if stretch >= MIN_ENCODED {
                return true;
            }
        } else {
            stretch = 0;
        }
    }
    false
}

/// The run itself and, when it holds `=`, `/` or the other alphabet's bytes inside (a
/// `key=value`, a path, a prefix), the pieces between them: an encoded blob after a prefix
/// decodes only on its own. A long run (an image) is split at `=` only.
fn pieces(run: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, run.len())];
    let trimmed = trim_padding(run).len();
    // `key=<base64 with />` splits at `=` alone; a path at `/` too.
    let seps: &[&[u8]] = if run.len() > 256 {
        &[b"="]
    } else {
        &[b"=", b"=/", b"-_", b"+/=-_"]
    };
    for seps in seps {
        if !run[..trimmed].iter().any(|b| seps.contains(b)) {
            continue;
        }
        let mut start = 0;
        for (i, &b) in run[..trimmed].iter().enumerate() {
            if seps.contains(&b) {
                if i - start >= MIN_ENCODED && (start, i) != (0, run.len()) {
                    out.push((start, i));
                }
                start = i + 1;
            }
        }
        if trimmed - start >= MIN_ENCODED && start > 0 {
            out.push((start, run.len()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The bytes `len` hex pairs spell, if they could hide anything ([`may_hide`]): most hex in
/// clean text is a commit id or a digest, decoded on the stack and dropped there.
fn hex_pairs<'r>(pairs: impl Iterator<Item = &'r [u8]>, len: usize) -> Option<Vec<u8>> {
    let mut stack = [0u8; 64];
    if len <= stack.len() {
        let mut n = 0;
        for (d, b) in stack.iter_mut().zip(pairs.filter_map(hex_byte)) {
            *d = b;
            n += 1;
        }
        return may_hide(&stack[..n]).then(|| stack[..n].to_vec());
    }
    Some(pairs.filter_map(hex_byte).collect())
}

/// The ways one run decodes: hex (also with `-` between pairs), base32, base64, base64url.
/// At most two (base32 and base64 can both hold); no list on the heap for them.
#[inline(never)] // off the walk's hot loop: inlined, it slowed every run of clean text by a fifth
fn decodings(run: &[u8]) -> impl Iterator<Item = (&'static str, Vec<u8>)> {
    let dashed_hex = run.len() >= 3 * 8 - 1
        && run.len() % 3 == 2
        && run.chunks(3).all(|c| {
            c[..2].iter().all(u8::is_ascii_hexdigit) && c.get(2).is_none_or(|&b| b == b'-')
        });
    if dashed_hex {
        let hex = hex_pairs(run.chunks(3).map(|c| &c[..2]), run.len() / 3 + 1);
        return [hex.map(|h| ("hex", h)), None].into_iter().flatten();
    }
    if run.len().is_multiple_of(2) && run.iter().all(u8::is_ascii_hexdigit) {
        let hex = hex_pairs(run.chunks(2), run.len() / 2);
        return [hex.map(|h| ("hex", h)), None].into_iter().flatten();
    }
    let body = trim_padding(run);
    let upper = body
        .iter()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b));
    let lower = body
        .iter()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(b));
    let base32 = (upper || lower)
        .then(|| base32(&body.to_ascii_uppercase()))
        .flatten()
        .map(|d| ("base32", d));
    // base64 of anything sixteen characters long mixes both cases; an identifier or a word
    // (`parse_manifest_from_reader`) does not, and is not worth a decode.
    let mixed = body.iter().any(u8::is_ascii_uppercase) && body.iter().any(u8::is_ascii_lowercase);
    // The decoders check the alphabet as they go (a run with `-` is not standard base64, one
    // with `+` not base64url): no pass of its own over a long run (an image).
    let base64 = (mixed && body.len() % 4 != 1)
        .then(|| {
            B64.decode(body)
                .map(|d| ("base64", d))
                .or_else(|_| B64URL.decode(body).map(|d| ("base64url", d)))
                .ok()
        })
        .flatten();
    [base32, base64].into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::is_run;

    #[test]
    fn runs_split_on_everything_but_token_bytes() {
        let w = walk(b"a bb ccc", false, &|_| false);
        assert!(w.found.is_none() && w.decoded.is_empty());
        assert!(is_run(b'+') && is_run(b'-') && !is_run(b'.') && !is_run(b':'));
    }

    #[test]
    fn runs_are_the_maximal_stretches_of_run_bytes() {
        // Every length, so that runs open at a block's end and at the input's end are seen.
        let text = b"  ab+c  d==\\n12/x-y_z  \xff\x00 q ".repeat(9);
        for len in 0..text.len() {
            let hay = &text[..len];
            let runs: Vec<&[u8]> = Runs::new(hay).map(|(s, e)| &hay[s..e]).collect();
            let want: Vec<&[u8]> = hay
                .split(|&b| !is_run(b))
                .filter(|r| !r.is_empty())
                .collect();
            assert_eq!(runs, want, "the first {len} bytes");
        }
    }

    #[test]
    fn sequences_are_found_where_they_end_and_at_the_end_of_input() {
        let hex: Vec<String> = b"0123456789".iter().map(|b| format!("{b:02x}")).collect();
        for hay in [format!("x {} y", hex.join(":")), hex.join(" ")] {
            let w = walk(hay.as_bytes(), false, &|_| false);
            assert!(w.decoded.iter().any(|d| d.bytes == b"0123456789"), "{hay}");
        }
    }
}
