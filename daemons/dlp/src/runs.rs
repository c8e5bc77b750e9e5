//! One pass over a layer: its runs (maximal stretches of token bytes, `[A-Za-z0-9+/=_-]`),
//! each judged once, and the short runs that only mean something in a sequence followed as
//! they come (a card in groups of four, an IBAN in groups, hex pairs between delimiters,
//! base64 wrapped over lines). Clean text costs a few vector compares per 16 bytes (see
//! [`crate::classify`]) and a few bit operations per 64, whatever the number of detectors:
//! only the runs that could start something are looked at one by one. The encoded runs found
//! are decoded here for the caller to peel.

use crate::Finding;
use crate::classify::{Classes, classes, is_run, run_mask};
use crate::detect::{card, iban, run_finding};
use crate::layers::{B64, B64URL, MIN_DECODED, MIN_ENCODED, base32, hex_byte, may_hide};
use base64::Engine;

/// The runs of a layer, in order, found sixty-four bytes at a time: each block's bytes are
/// classified into bit masks ([`classes`]) and a run's start and end are bit scans in them,
/// instead of a branch per byte, which the boundaries of short words mispredict.
///
/// [`Runs::next_notable`] goes further: the runs [`notable`] would pick out of a block are
/// found by arithmetic on its masks, so the words between them (most of clean text) cost
/// nothing one by one.
struct Runs<'h> {
    hay: &'h [u8],
    /// Where the next run is looked for: 0, or the end of the last run returned (so never
    /// inside a run).
    pos: usize,
    /// The block the masks are of (a multiple of 64), or `usize::MAX` before the first.
    base: usize,
    /// The classes of the block at `base` and of the one after it (zero past the end).
    cur: Classes,
    next: Classes,
    /// The starts of the notable runs in the block at `base`, once asked for.
    notable: Option<u64>,
}

impl<'h> Runs<'h> {
    fn new(hay: &'h [u8]) -> Self {
        Runs {
            hay,
            pos: 0,
            base: usize::MAX,
            cur: Classes::default(),
            next: Classes::default(),
            notable: None,
        }
    }

    fn classes_at(&self, at: usize) -> Classes {
        let n = self.hay.len();
        if at >= n {
            return Classes::default();
        }
        classes(&self.hay[at..n.min(at + 64)])
    }

    /// Make `base` the block the masks are of; stepping to the next block classifies one.
    #[inline(always)]
    fn load(&mut self, base: usize) {
        if base == self.base {
            return;
        }
        self.cur = if base == self.base.wrapping_add(64) {
            self.next
        } else {
            self.classes_at(base)
        };
        self.next = self.classes_at(base + 64);
        self.base = base;
        self.notable = None;
    }

    /// The end of the run that starts at `start`, in the loaded block.
    #[inline(always)]
    fn end_of(&self, start: usize) -> usize {
        let wide = u128::from(self.cur.run) | u128::from(self.next.run) << 64;
        let past = !wide >> (start - self.base);
        if past != 0 {
            return start + past.trailing_zeros() as usize;
        }
        // A run longer than the two blocks (an image, a blob): block by block from there.
        let n = self.hay.len();
        let mut at = self.base + 128;
        while at < n {
            let mask = run_mask(&self.hay[at..n.min(at + 64)]);
            if mask != u64::MAX {
                return (at + mask.trailing_ones() as usize).min(n);
            }
            at += 64;
        }
        n
    }

    /// The run starting first in `starts` of the block at `base`, from `pos` on; steps past it.
    #[inline(always)]
    fn take(&mut self, starts: u64) -> Option<(usize, usize)> {
        let off = self.pos.saturating_sub(self.base);
        let bits = if off >= 64 {
            0
        } else {
            starts & (u64::MAX << off)
        };
        if bits == 0 {
            return None;
        }
        let start = self.base + bits.trailing_zeros() as usize;
        let end = self.end_of(start);
        self.pos = end;
        Some((start, end))
    }

    /// The first run from `pos` on whose start is among `starts(self)` for its block; steps
    /// past it.
    #[inline(always)]
    fn next_among(&mut self, starts: impl Fn(&mut Self) -> u64) -> Option<(usize, usize)> {
        let n = self.hay.len();
        let mut base = self.pos & !63;
        while base < n {
            self.load(base);
            let starts = starts(self);
            if let Some(run) = self.take(starts) {
                return Some(run);
            }
            base += 64;
        }
        self.pos = n;
        None
    }

    /// The next run that could matter while no sequence is open ([`notable`]). The words
    /// between are passed over a block at a time.
    #[inline(always)]
    fn next_notable(&mut self) -> Option<(usize, usize)> {
        self.next_among(|runs| {
            let carry = runs.base > 0 && is_run(runs.hay[runs.base - 1]);
            let (cur, next) = (runs.cur, runs.next);
            *runs
                .notable
                .get_or_insert_with(|| notable_starts(cur, next, carry))
        })
    }
}

impl Iterator for Runs<'_> {
    type Item = (usize, usize);

    // Always: a call per run otherwise, in the bundle's size-optimised link.
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        // `pos` is never inside a run: the first run byte from there starts one.
        self.next_among(|runs| runs.cur.run)
    }
}

/// The starts of the runs in a block that [`notable`] would pick: `cur` is the block's
/// classes, `next` the following block's (a run's first 13 bytes can reach into it), `carry`
/// whether the byte before the block is a run byte.
#[inline(always)]
fn notable_starts(cur: Classes, next: Classes, carry: bool) -> u64 {
    const _: () = assert!(FINDING_MIN == 13, "the shifts below count to 13");
    let wide = |lo: u64, hi: u64| u128::from(lo) | u128::from(hi) << 64;
    let run = wide(cur.run, next.run);
    let starts = cur.run & !(cur.run << 1 | u64::from(carry));
    // Bit i of `through[k]`: bytes i..=i+k are all run bytes.
    let through1 = run & run >> 1;
    let through2 = through1 & run >> 2;
    let through3 = through2 & run >> 3;
    let through4 = through3 & run >> 4;
    let mut through12 = through1;
    through12 &= through12 >> 2; // i..=i+3
    through12 &= through12 >> 4; // i..=i+7
    through12 &= through12 >> 5; // i..=i+12
    let long = through12;
    let short = !through4;
    // A short run (at most four bytes) holds a byte that is no digit or capital.
    let other = run & !wide(cur.group, next.group);
    let mixed = other | through1 & other >> 1 | through2 & other >> 2 | through3 & other >> 3;
    let hex = wide(cur.hex, next.hex);
    let pair = through1 & !(run >> 2) & hex & hex >> 1;
    starts & (long | short & (!mixed | pair)) as u64
}

/// Whether `walk` must look at `run` (never empty) when no sequence is open: what
/// [`run_finding`], a decoding, [`Wrapped`], [`Groups`] or [`HexPairs`] would start on. The
/// definition [`notable_starts`] computes for a block at once (a test compares them).
#[cfg(test)]
fn notable(run: &[u8]) -> bool {
    let short = run.len() <= 4;
    let group = run.iter().all(|&b| crate::classify::is_group(b));
    let pair = run.len() == 2 && run.iter().all(u8::is_ascii_hexdigit);
    run.len() >= FINDING_MIN || short && (group || pair)
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

/// Runs shorter than this hold nothing [`run_finding`] looks for.
const FINDING_MIN: usize = 13;
// Every run a decoding or a wrapped block could start on is at least as long (see `notable`).
const _: () = assert!(FINDING_MIN <= MIN_ENCODED && FINDING_MIN <= WRAP_MIN);

/// Walk `hay`; `detect` runs the validated detectors too (on text layers).
pub(crate) fn walk(hay: &[u8], detect: bool, skip: &dyn Fn(&str) -> bool) -> Walked {
    walk_runs(hay, detect, skip, true)
}

/// [`walk`], passing over the runs that cannot matter when `pass_over` (a test compares).
fn walk_runs(hay: &[u8], detect: bool, skip: &dyn Fn(&str) -> bool, pass_over: bool) -> Walked {
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
        // With no sequence open, the runs between notable ones change nothing: the trackers
        // start only on notable runs, and the gap before one matters only to an open tracker.
        let idle = pass_over
            && cards.count == 0
            && ibans.count == 0
            && pairs.bytes.is_empty()
            && !lines.open;
        let next = if idle {
            runs.next_notable()
        } else {
            runs.next()
        };
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
            if run.len() >= FINDING_MIN {
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
            && let Some((s, e, joined)) = lines.push(hay, gap, (start, end), done)
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
            // In a run, what is not a letter or a digit is one of `=/+-_`.
            let pieces: &[(usize, usize)] = if trim_padding(run)
                .iter()
                .any(|&b| !b.is_ascii_alphanumeric())
            {
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
    /// The lines joined, once there are two (the first is `start..start + width` till then).
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
        hay: &[u8],
        gap: &[u8],
        (start, end): (usize, usize),
        done: bool,
    ) -> Option<(usize, usize, Vec<u8>)> {
        let run = &hay[start..end];
        // The line itself: a run after a JSON `\n` starts with that `n`.
        let (newline, line) = match (gap, run.split_first()) {
            (b"\n" | b"\r\n", _) => (true, run),
            (b"\\", Some((b'n', rest))) => (true, rest),
            _ => (false, run),
        };
        if !done && self.open && newline && !line.is_empty() && line.len() <= self.width {
            if self.lines == 1 {
                // The first line is copied only now: most runs that could start a block
                // (ids, digests, paths) are followed by no second line.
                self.joined
                    .extend_from_slice(&hay[self.start..self.start + self.width]);
            }
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
    has_alnum_stretch(run, MIN_ENCODED) || run.iter().filter(|&&b| b == b'-').count() >= 7
}

/// Whether `run` holds `n` letters and digits in a row.
///
/// Each window of `n` bytes is read from its end backwards: the first byte that is not a
/// letter or digit rules out every window holding it, so the next window starts just after
/// it. On identifiers and paths, whose separators come every few bytes, most bytes are never
/// read; none is read more than twice.
fn has_alnum_stretch(run: &[u8], n: usize) -> bool {
    if n == 0 {
        return true;
    }
    let mut end = n - 1;
    while end < run.len() {
        let start = end + 1 - n;
        let mut i = end;
        loop {
            if !run[i].is_ascii_alphanumeric() {
                break;
            }
            if i == start {
                return true;
            }
            i -= 1;
        }
        end = i + n;
    }
    false
}

/// The run itself and, when it holds `=`, `/` or the other alphabet's bytes inside (a
/// `key=value`, a path, a prefix), the pieces between them: an encoded blob after a prefix
/// decodes only on its own. A long run (an image) is split at `=` only.
fn pieces(run: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, run.len())];
    let trimmed = trim_padding(run).len();
    let mut cut_at = |seps: &mut dyn Iterator<Item = usize>| {
        let mut start = 0;
        let mut any = false;
        for i in seps {
            any = true;
            if i - start >= MIN_ENCODED && (start, i) != (0, run.len()) {
                out.push((start, i));
            }
            start = i + 1;
        }
        if any && trimmed - start >= MIN_ENCODED && start > 0 {
            out.push((start, run.len()));
        }
    };
    if run.len() > 256 {
        // `key=<base64 with />` splits at `=` alone.
        cut_at(&mut memchr::memchr_iter(b'=', &run[..trimmed]));
    } else {
        // A path splits at `/` too; an identifier at `-` and `_`.
        let seps: [fn(u8) -> bool; 4] = [
            |b| b == b'=',
            |b| matches!(b, b'=' | b'/'),
            |b| matches!(b, b'-' | b'_'),
            |b| matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'),
        ];
        for is_sep in seps {
            let positions = run[..trimmed].iter().enumerate();
            cut_at(&mut positions.filter(|&(_, &b)| is_sep(b)).map(|(i, _)| i));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What `len` hex pairs spell, decoded as they are read: `None` at the first pair that is not
/// two hex digits (most runs fail on their first bytes), `Some(None)` when the bytes could hide
/// nothing ([`may_hide`]): most hex in clean text is a commit id or a digest, decoded on the
/// stack and dropped there.
fn hex_pairs<'r>(pairs: impl Iterator<Item = &'r [u8]>, len: usize) -> Option<Option<Vec<u8>>> {
    let mut stack = [0u8; 64];
    if len > stack.len() {
        return pairs.map(hex_byte).collect::<Option<Vec<u8>>>().map(Some);
    }
    let mut n = 0;
    for (d, pair) in stack.iter_mut().zip(pairs) {
        *d = hex_byte(pair)?;
        n += 1;
    }
    Some(may_hide(&stack[..n]).then(|| stack[..n].to_vec()))
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
        let hex = hex_pairs(run.chunks(3).map(|c| &c[..2]), run.len() / 3 + 1).flatten();
        return [hex.map(|h| ("hex", h)), None].into_iter().flatten();
    }
    if run.len().is_multiple_of(2)
        && let Some(hex) = hex_pairs(run.chunks_exact(2), run.len() / 2)
    {
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
    fn passing_over_idle_runs_changes_nothing() {
        use base64::Engine;
        let wrapped = B64
            .encode(b"a secret wrapped over lines of sixteen, as base64 -w 16 does it")
            .into_bytes()
            .chunks(16)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>();
        let pieces = [
            "4539 1488 0343 6467".to_string(),
            "GB82 WEST 1234 5698 7654 32".to_string(),
            "de:ad:be:ef:00:11:22:33:44".to_string(),
            "41 4b 49 41 51 52 53 54".to_string(),
            wrapped.join("\n"),
            wrapped.join("\n"),
            "the quick brown 12 AB fox, 0f e1 words ab".to_string(),
            "c2VjcmV0LXZhbHVlLWhlcmUtMTIzNDU2".to_string(),
            "1 22 333 4444 55555 A BB CCC DDDD EEEEE".to_string(),
        ];
        let mut rules = std::collections::BTreeSet::new();
        let mut decodings = 0;
        // Every piece after every other, with gaps that break or keep a sequence going.
        for a in &pieces {
            for b in &pieces {
                for gap in [" ", "\n", " word ", ":"] {
                    let hay = format!("{a}{gap}{b}");
                    let walked = |pass_over| {
                        let w = walk_runs(hay.as_bytes(), true, &|_| false, pass_over);
                        let decoded: Vec<_> = w
                            .decoded
                            .into_iter()
                            .map(|d| (d.name, d.start, d.end, d.bytes))
                            .collect();
                        (w.found.map(|f| (f.rule, f.start, f.end)), decoded)
                    };
                    let (skipping, every_run) = (walked(true), walked(false));
                    assert_eq!(skipping, every_run, "{hay:?}");
                    rules.extend(every_run.0.map(|f| f.0));
                    decodings += every_run.1.len();
                }
            }
        }
        // The corpus must give the trackers something to find, or the comparison proves nothing.
        for rule in ["payment-card", "iban"] {
            assert!(rules.contains(rule), "no {rule} in the corpus: {rules:?}");
        }
        assert!(decodings > 0, "nothing in the corpus decoded");
    }

    #[test]
    fn notable_runs_are_found_a_block_at_a_time_as_one_by_one() {
        // Short and long runs of every class, across block edges and past two blocks.
        let long = "x".repeat(140);
        let text = format!(
            "ab 12 AB12 4111 DE89 0f:e1 the Q 7 abcdefghijklm abcdefghijkl {long} 1234567890123 \
             ab+c d==\\n12/x-y_z é g1 Abc 12345 ZZZZ9 a1b2c3d4e5f6g7h8 "
        )
        .repeat(5);
        let text = text.as_bytes();
        for from in 0..70 {
            for len in (from..text.len()).step_by(7) {
                let hay = &text[from..len];
                let mut runs = Runs::new(hay);
                let got: Vec<(usize, usize)> = std::iter::from_fn(|| runs.next_notable()).collect();
                let want: Vec<(usize, usize)> = Runs::new(hay)
                    .filter(|&(s, e)| notable(&hay[s..e]))
                    .collect();
                assert_eq!(got, want, "bytes {from}..{len}");
            }
        }
    }

    #[test]
    fn notable_runs_are_the_ones_a_sequence_or_detector_starts_on() {
        for word in ["12", "1234", "AB12", "DE", "ab", "0f", "f0", "Q", "7"] {
            assert!(notable(word.as_bytes()), "{word}");
        }
        for word in [
            "the",
            "fox",
            "Abc",
            "12345",
            "xy",
            "g1",
            "words",
            "abcdefghijkl",
        ] {
            assert!(!notable(word.as_bytes()), "{word}");
        }
        assert!(notable(b"abcdefghijklm"));
    }

    #[test]
    fn sequences_are_found_where_they_end_and_at_the_end_of_input() {
        let hex: Vec<String> = b"0123456789".iter().map(|b| format!("{b:02x}")).collect();
        for hay in [format!("x {} y", hex.join(":")), hex.join(" ")] {
            let w = walk(hay.as_bytes(), false, &|_| false);
            assert!(w.decoded.iter().any(|d| d.bytes == b"0123456789"), "{hay}");
        }
    }

    #[test]
    fn a_stretch_is_found_by_skipping_exactly_where_a_byte_by_byte_count_finds_it() {
        let by_bytes = |run: &[u8], n: usize| {
            let mut stretch = 0;
            run.iter().any(|b| {
                stretch = if b.is_ascii_alphanumeric() {
                    stretch + 1
                } else {
                    0
                };
                stretch >= n
            }) || n == 0
        };
        let mut rng = crate::testing::Lcg(11);
        for round in 0..20_000 {
            // Separators dense or sparse, so that stretches land at every offset and length.
            let alphabet = match round % 3 {
                0 => "ab12_",
                1 => "abcdefgh0123-/",
                _ => "aZ9aZ9aZ9aZ9aZ9aZ9aZ9.",
            };
            let len = rng.next_u32() as usize % 80;
            let run = rng.pick(alphabet, len);
            for n in [0, 1, 2, 5, 16, 17] {
                assert_eq!(
                    has_alnum_stretch(run.as_bytes(), n),
                    by_bytes(run.as_bytes(), n),
                    "{run:?} {n}"
                );
            }
        }
    }
}
