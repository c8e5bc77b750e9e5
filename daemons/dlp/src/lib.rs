//! Secret scanning shared by bottle's sidecars.
//!
//! The egress proxy scans what the agent sends out (URLs, headers, request bodies) and, on
//! routes where it injects a credential, the responses that could echo that credential back.
//! git-gate scans what the agent pushes (blobs, commit messages, paths). Both ask the same
//! question, so they share one engine:
//!
//! - **Known values**: the credentials bottle itself holds, matched raw and in the encodings a
//!   client would apply on the way out (base64, base64url, hex, percent-encoding).
//! - **Token patterns**: well-known token formats (GitHub, AWS, Slack, Anthropic, OpenAI, …)
//!   that the agent may have picked up from the workspace; see [`Scanner::rule_ids`].
//!
//! One aho-corasick pass finds every known value and every pattern's literal anchor (its
//! prefilter skips clean text); a rule's regex runs only where its anchor was seen, on a window
//! no longer than the rule's longest match. Clean text therefore costs one prefiltered pass,
//! whatever the number of rules.
//!
//! [`Scanner::inspect`] goes further, for what an agent sends on purpose: it peels every
//! encoding a layer can carry (percent, JSON and `\x` escapes, hex with or without
//! delimiters, base32, base64, base64url, wrapped base64; see [`layers`]) and scans each layer
//! with the patterns, the known values and the validated detectors (JWTs, payment cards by
//! Luhn, IBANs by mod-97, wallet keys and addresses by their checksums, secret-named
//! assignments; see [`detect`]). [`content`] undoes HTTP's own encodings first, and
//! [`Scanner::inspect_url`], [`Scanner::inspect_header`] and [`Scanner::inspect_labels`] judge
//! the short values of a request by their shape as well.
//!
//! A [`Finding`] never holds the matched bytes: only the rule, the offsets and, for a known
//! value, the secret's name. It is safe to log.

mod classify;
pub mod content;
pub mod detect;
mod extra;
mod known;
pub mod layers;
mod rules;
mod runs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod values;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use rules::{RULES, Rule};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;

pub use extra::{Check, ExtraRule};
pub use known::MIN_KNOWN_LEN;

/// A secret whose value must never leave except where it belongs.
///
/// Values shorter than [`MIN_KNOWN_LEN`] bytes are ignored by the scanner: they occur by chance
/// in clean data too often to block on.
#[derive(Clone, PartialEq, Eq)]
pub struct KnownSecret {
    /// What findings call it, e.g. `EGRESS_TOKEN_0`; never the value.
    pub name: String,
    /// The secret itself.
    pub value: Vec<u8>,
}

impl KnownSecret {
    /// A known secret from its name and value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        KnownSecret {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for KnownSecret {
    // Hand-written so that logging a config never logs the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownSecret")
            .field("name", &self.name)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// What was found: which rule, where. Never the matched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A pattern id such as `github-pat`, or `secret:NAME` / `secret:NAME (base64)` for a known value.
    pub rule: String,
    /// Offset of the first matched byte.
    pub start: usize,
    /// Offset one past the last matched byte.
    pub end: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at bytes {}..{}", self.rule, self.start, self.end)
    }
}

/// What one automaton pattern stands for: an anchor of some rules, a form of a known value, or
/// both (a known value may happen to equal an anchor).
#[derive(Default)]
struct Target {
    /// Indexes into `Scanner::rules` anchored by this pattern.
    rules: Vec<usize>,
    /// Index into `Scanner::labels` if this pattern is a form of a known value.
    label: Option<usize>,
}

/// A rule with its regex, anchored so it only ever tries the anchor's position.
struct Compiled {
    rule: &'static Rule,
    regex: Regex,
}

impl Compiled {
    /// The end of this rule's match at `start`, if there is one.
    fn match_at(&self, hay: &[u8], start: usize) -> Option<usize> {
        if let Some(&b) = start.checked_sub(1).and_then(|i| hay.get(i))
            && self.rule.before.rejects(b)
        {
            return None;
        }
        let window = hay.get(start..hay.len().min(start.saturating_add(self.rule.max_len)))?;
        let end = start + self.regex.find(window)?.end();
        // At the end of `hay` there is nothing to reject on: a stream may continue the token,
        // but reporting it early is the safe side.
        if let Some(&b) = hay.get(end)
            && self.rule.after.rejects(b)
        {
            return None;
        }
        Some(end)
    }
}

/// A place the automaton pointed at, before verification.
///
/// Ordered by start, then known values (longest first) before rules (in table order): the
/// non-overlapping pass takes the first candidate that holds at each position.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    start: usize,
    kind: Kind,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Known { end: Reverse<usize>, label: usize },
    Rule(usize),
}

/// The compiled scanner: built once, shared (Send + Sync), cheap to scan with.
pub struct Scanner {
    /// Every rule anchor and every form of every known value; `None` when there are neither.
    automaton: Option<AhoCorasick>,
    /// The automaton's patterns, by id.
    patterns: Vec<Vec<u8>>,
    /// Pattern ids by their first byte: every pattern that can start at a position.
    starting: Vec<Vec<usize>>,
    /// By automaton pattern id.
    targets: Vec<Target>,
    rules: Vec<Compiled>,
    /// `secret:NAME…` labels of the known-value forms.
    labels: Vec<String>,
    max_len: usize,
    /// The manifest's own detectors.
    extra: Vec<ExtraRule>,
}

impl fmt::Debug for Scanner {
    // Only counts: the forms of known values are the secrets themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.rules.len())
            .field("known_forms", &self.labels.len())
            .field("max_match_len", &self.max_len)
            .finish()
    }
}

impl Scanner {
    /// Token patterns plus the given known values.
    ///
    /// # Panics
    ///
    /// Only if the known values exceed aho-corasick's limits (billions of automaton states),
    /// which no configuration comes near.
    pub fn new(known: &[KnownSecret]) -> Scanner {
        Scanner::build(RULES, known)
    }

    /// Known values only (no patterns): for scanning responses for an echoed token.
    ///
    /// # Panics
    ///
    /// As [`Scanner::new`].
    pub fn known_only(known: &[KnownSecret]) -> Scanner {
        Scanner::build(&[], known)
    }

    fn build(rules: &'static [Rule], known: &[KnownSecret]) -> Scanner {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut target_for = |bytes: Vec<u8>| -> usize {
            *index.entry(bytes.clone()).or_insert_with(|| {
                patterns.push(bytes);
                targets.push(Target::default());
                targets.len() - 1
            })
        };

        let mut compiled = Vec::with_capacity(rules.len());
        let mut anchored: Vec<(usize, usize)> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let regex = RegexBuilder::new(&format!(r"\A(?:{})", rule.pattern))
                .unicode(false)
                .build()
                .expect("the static rule table compiles (tested)");
            compiled.push(Compiled { rule, regex });
            for anchor in rule.anchors {
                anchored.push((target_for(anchor.as_bytes().to_vec()), i));
            }
        }

        let mut labels = Vec::new();
        let mut known_pattern_ids = Vec::new();
        let mut max_len = rules.iter().map(|r| r.max_len).max().unwrap_or(0);
        for secret in known.iter().filter(|s| s.value.len() >= MIN_KNOWN_LEN) {
            for (form, suffix) in known::forms(&secret.value) {
                max_len = max_len.max(form.len());
                known_pattern_ids.push((target_for(form), labels.len()));
                labels.push(format!("secret:{}{suffix}", secret.name));
            }
        }

        for (t, rule) in anchored {
            targets[t].rules.push(rule);
        }
        for (t, label) in known_pattern_ids {
            // First form wins: the same bytes under two names report the first.
            targets[t].label.get_or_insert(label);
        }

        let automaton = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                // Leftmost-first keeps aho-corasick's prefilter, which skips clean text twenty
                // times faster than an overlapping walk; every pattern starting at a hit is
                // then found by its first byte (`starting`), so "sk-" and "sk-ant-api" both
                // count at one offset.
                .match_kind(MatchKind::LeftmostFirst)
                .build(&patterns)
                .expect("known values within aho-corasick's size limits")
        });
        let mut starting: Vec<Vec<usize>> = vec![Vec::new(); 256];
        for (i, p) in patterns.iter().enumerate() {
            if let Some(&b) = p.first() {
                starting[usize::from(b)].push(i);
            }
        }

        Scanner {
            automaton,
            patterns,
            starting,
            targets,
            rules: compiled,
            labels,
            max_len,
            extra: Vec::new(),
        }
    }

    /// This scanner with the manifest's own detectors added ([`Scanner::inspect`] runs them on
    /// every layer).
    pub fn with_extra(mut self, extra: Vec<ExtraRule>) -> Scanner {
        self.extra = extra;
        self
    }

    /// The first finding of an extra detector in `hay` that `skip` does not name.
    pub(crate) fn extra_finding(&self, hay: &[u8], skip: &dyn Fn(&str) -> bool) -> Option<Finding> {
        self.extra
            .iter()
            .filter(|r| !skip(r.id()))
            .find_map(|r| r.find(hay))
    }

    /// First finding in `hay`, if any.
    pub fn scan(&self, hay: &[u8]) -> Option<Finding> {
        self.find(hay, 0, 0, true, &|_| false).pop()
    }

    /// First finding in `hay` or in any layer it decodes to (see [`layers`]): for what the agent
    /// sends out. Input whose layers would decode past the byte budget is a finding
    /// ([`layers::TOO_LARGE`]), as is one wrapped deeper than [`layers::MAX_DEPTH`].
    pub fn inspect(&self, hay: &[u8]) -> Option<Finding> {
        self.inspector(&|_| false).inspect(hay)
    }

    /// [`Scanner::inspect`] for a window of a stream whose first `fresh` bytes were inspected
    /// with the window before: only findings that end after them.
    pub fn inspect_after(&self, hay: &[u8], fresh: usize) -> Option<Finding> {
        self.inspector(&|_| false).inspect_after(hay, fresh)
    }

    /// The deep scans with exceptions: a finding whose rule id `skip` names is passed over, and
    /// the scan goes on past it (an allowed finding never hides a later one).
    pub fn inspector<'s>(&'s self, skip: &'s dyn Fn(&str) -> bool) -> Inspector<'s> {
        Inspector {
            scanner: self,
            skip,
        }
    }

    /// First finding in `hay` that ends after `fresh`: for a caller that keeps its own tail of
    /// already-scanned bytes in front of new ones and must not re-report (or misjudge, with the
    /// left context cut off) what lies wholly inside the tail.
    pub fn scan_after(&self, hay: &[u8], fresh: usize) -> Option<Finding> {
        self.find(hay, 0, fresh, true, &|_| false).pop()
    }

    /// Every finding (non-overlapping, in order) — git-gate wants file/line for each.
    pub fn scan_all(&self, hay: &[u8]) -> Vec<Finding> {
        self.find(hay, 0, 0, false, &|_| false)
    }

    /// Every finding whose rule `skip` does not name. Skipped rules are dropped before
    /// overlapping candidates are resolved, so an excepted token never hides one that overlaps
    /// it (`sk_test_…ghp_…`).
    pub(crate) fn scan_all_except(&self, hay: &[u8], skip: &dyn Fn(&str) -> bool) -> Vec<Finding> {
        self.find(hay, 0, 0, false, skip)
    }

    /// How many of `hay`'s last bytes begin a known value (in one of its forms) that bytes
    /// still to come could complete: what a stream that passes bytes on as it scans them
    /// must hold back, so that no part of a value gets out before the whole is seen.
    pub fn known_prefix_at_end(&self, hay: &[u8]) -> usize {
        self.patterns
            .iter()
            .zip(&self.targets)
            .filter(|(_, t)| t.label.is_some())
            .filter_map(|(form, _)| {
                // Only where the form's first byte is can it begin: each such spot in the
                // last `len - 1` bytes is tried once, the earliest (longest) first.
                let window = &hay[hay.len() - form.len().saturating_sub(1).min(hay.len())..];
                memchr::memchr_iter(*form.first()?, window)
                    .find(|&i| form.starts_with(&window[i..]))
                    .map(|i| window.len() - i)
            })
            .max()
            .unwrap_or(0)
    }

    /// The longest match any rule or known value can have (the carry a streaming scan needs).
    pub fn max_match_len(&self) -> usize {
        self.max_len
    }

    /// A streaming scan over chunks of one body.
    pub fn stream(&self) -> StreamScan<'_> {
        StreamScan {
            scanner: self,
            tail: Vec::new(),
            tail_at: 0,
            reported_to: 0,
        }
    }

    /// The rule ids this scanner knows (for docs/tests); empty for [`Scanner::known_only`].
    pub fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|c| c.rule.id).collect()
    }

    /// Non-overlapping findings that start at or after `from` and end after `fresh`, leftmost
    /// first; only the first if `first_only`.
    fn find(
        &self,
        hay: &[u8],
        from: usize,
        fresh: usize,
        first_only: bool,
        skip: &dyn Fn(&str) -> bool,
    ) -> Vec<Finding> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        let mut candidates = Vec::new();
        let mut excused: Vec<usize> = Vec::new();
        let mut at = from;
        while at < hay.len()
            && let Some(m) = automaton.find(aho_corasick::Input::new(hay).range(at..))
        {
            let start = m.start();
            for &id in &self.starting[usize::from(hay[start])] {
                let pattern = &self.patterns[id];
                if !hay[start..].starts_with(pattern) {
                    continue;
                }
                let target = &self.targets[id];
                if let Some(label) = target.label {
                    let kind = Kind::Known {
                        end: Reverse(start + pattern.len()),
                        label,
                    };
                    candidates.push(Candidate { start, kind });
                }
                for &rule in &target.rules {
                    if skip(self.rules[rule].rule.id) {
                        // An excepted token is excepted whole: its near variant (same start)
                        // must not refuse it instead.
                        if self.rules[rule].match_at(hay, start).is_some() {
                            excused.push(start);
                        }
                        continue;
                    }
                    candidates.push(Candidate {
                        start,
                        kind: Kind::Rule(rule),
                    });
                }
            }
            at = start + 1;
        }
        if !excused.is_empty() {
            candidates.retain(|c| match c.kind {
                Kind::Rule(i) => {
                    !(self.rules[i].rule.id.ends_with("-near") && excused.contains(&c.start))
                }
                Kind::Known { .. } => true,
            });
        }
        candidates.sort_unstable();
        candidates.dedup();

        let mut found = Vec::new();
        let mut taken_to = from;
        for Candidate { start, kind } in candidates {
            if start < taken_to {
                continue;
            }
            let (end, rule) = match kind {
                Kind::Known {
                    end: Reverse(end),
                    label,
                } => (end, self.labels[label].as_str()),
                Kind::Rule(i) => match self.rules[i].match_at(hay, start) {
                    Some(end) => (end, self.rules[i].rule.id),
                    None => continue,
                },
            };
            taken_to = end;
            if end > fresh {
                found.push(Finding {
                    rule: rule.to_string(),
                    start,
                    end,
                });
                if first_only {
                    break;
                }
            }
        }
        found
    }
}

/// [`Scanner`]'s deep scans with exceptions; see [`Scanner::inspector`].
#[derive(Clone, Copy)]
pub struct Inspector<'s> {
    scanner: &'s Scanner,
    skip: &'s dyn Fn(&str) -> bool,
}

impl fmt::Debug for Inspector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("scanner", self.scanner)
            .finish()
    }
}

impl Inspector<'_> {
    /// [`Scanner::inspect`], passing over what this inspector skips.
    pub fn inspect(&self, hay: &[u8]) -> Option<Finding> {
        layers::Peel {
            scanner: self.scanner,
            skip: self.skip,
            budget: layers::budget_for(hay.len()),
        }
        .layer(hay, 0)
    }

    /// [`Scanner::inspect_after`], passing over what this inspector skips.
    pub fn inspect_after(&self, hay: &[u8], fresh: usize) -> Option<Finding> {
        if fresh == 0 {
            return self.inspect(hay);
        }
        // A finding wholly inside the carried bytes was reported (or cleared) already; what
        // follows it is inspected again for one that reaches into the new bytes.
        let mut from = 0;
        loop {
            let mut f = self.inspect(&hay[from..])?;
            f.start += from;
            f.end += from;
            if f.end > fresh || f.end <= from {
                return Some(f).filter(|f| f.end > fresh);
            }
            from = f.end;
        }
    }

    /// Whether this inspector passes over findings of `rule`.
    pub(crate) fn skips(&self, rule: &str) -> bool {
        (self.skip)(rule)
    }
}

/// Scans a body chunk by chunk without buffering it whole: keeps the last max_match_len bytes
/// so a secret split across chunks is still found.
///
/// That is one byte more than the longest match needs: the byte left of it, so the check that a
/// token is not glued to a longer word has its context. A finding is reported once, in the push
/// that completes it; one at
/// the very end of a chunk is reported even if the next chunk would have made it part of a
/// longer word (erring on the side of blocking), and an open-ended token split mid-body is
/// reported with the part seen so far.
pub struct StreamScan<'a> {
    scanner: &'a Scanner,
    /// The last bytes seen: the carry, then (during a push) the new chunk.
    tail: Vec<u8>,
    /// Stream offset of `tail[0]`.
    tail_at: usize,
    /// Stream offset where the last reported finding ended; nothing before it is reported again.
    reported_to: usize,
}

impl fmt::Debug for StreamScan<'_> {
    // The tail holds body bytes, possibly part of a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamScan")
            .field("tail_len", &self.tail.len())
            .field("tail_at", &self.tail_at)
            .finish()
    }
}

impl StreamScan<'_> {
    /// Scan the next chunk; offsets in the Finding are relative to the whole stream so far.
    ///
    /// Only the first new finding is returned; use [`StreamScan::push_all`] to see every one.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Finding> {
        self.feed(chunk, true).pop()
    }

    /// Scan the next chunk and return every new finding, with stream offsets.
    pub fn push_all(&mut self, chunk: &[u8]) -> Vec<Finding> {
        self.feed(chunk, false)
    }

    /// Bytes pushed so far.
    pub fn position(&self) -> usize {
        self.tail_at.saturating_add(self.tail.len())
    }

    fn feed(&mut self, chunk: &[u8], first_only: bool) -> Vec<Finding> {
        let old = self.tail.len();
        self.tail.extend_from_slice(chunk);
        let from = self.reported_to.saturating_sub(self.tail_at);
        let mut found = self
            .scanner
            .find(&self.tail, from, old, first_only, &|_| false);
        for f in &mut found {
            f.start = f.start.saturating_add(self.tail_at);
            f.end = f.end.saturating_add(self.tail_at);
        }
        if let Some(last) = found.last() {
            self.reported_to = last.end;
        }
        let keep = self.scanner.max_len.min(self.tail.len());
        let cut = self.tail.len() - keep;
        self.tail.drain(..cut);
        self.tail_at = self.tail_at.saturating_add(cut);
        found
    }
}

#[cfg(test)]
mod tests;
