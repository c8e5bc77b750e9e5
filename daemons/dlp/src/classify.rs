//! Bytes sorted into classes sixty-four at a time, as one bit mask: the scans step from one
//! class boundary to the next with a bit scan instead of a branch per byte, which the short
//! words of text (and the printable bytes scattered through random data) mispredict.

/// Whether `b` belongs to a run (`[A-Za-z0-9+/=_-]`): words, identifiers and every encoding
/// peeled.
pub(crate) const fn is_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

/// Whether `b` is printable ASCII (`0x20..0x7f`).
// The byte tests below define the classes the vector code computes; where it runs, only the
// tests (which hold it to them) call them.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "only the tests call it where the vector code runs"
    )
)]
pub(crate) const fn is_printable(b: u8) -> bool {
    0x20 <= b && b < 0x7f
}

/// Bit `i` set when `bytes[i]` is a run byte ([`is_run`]); `bytes` is at most 64 long.
pub(crate) fn run_mask(bytes: &[u8]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `sse2::run_bits` needs SSE2 and nothing else; this code is compiled only
        // where the target enables it (every x86-64 target does: it is the baseline).
        by_sixteen(bytes, |b| unsafe { sse2::run_bits(b) })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    by_byte(bytes, is_run)
}

/// Whether `b` is text: printable or ASCII whitespace (tab, newline, form feed, return).
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "only the tests call it where the vector code runs"
    )
)]
pub(crate) const fn is_text(b: u8) -> bool {
    is_printable(b) || b.is_ascii_whitespace()
}

/// Bit `i` set when `bytes[i]` is text ([`is_text`]); `bytes` is at most 64 long.
pub(crate) fn text_mask(bytes: &[u8]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `run_mask`.
        by_sixteen(bytes, |b| unsafe { sse2::text_bits(b) })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    by_byte(bytes, is_text)
}

/// Whether `b` can be part of a card or an IBAN group: a digit or a capital.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "only the tests call it where the vector code runs"
    )
)]
pub(crate) const fn is_group(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_uppercase()
}

/// The classes of up to 64 bytes the walk over runs needs, one bit per byte.
#[derive(Clone, Copy, Default)]
pub(crate) struct Classes {
    /// Run bytes ([`is_run`]).
    pub(crate) run: u64,
    /// Digits and capitals ([`is_group`]).
    pub(crate) group: u64,
    /// Hex digits, either case.
    pub(crate) hex: u64,
}

/// The [`Classes`] of `bytes` (at most 64 long), each byte loaded once.
pub(crate) fn classes(bytes: &[u8]) -> Classes {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above; the answer is cached).
        return with_block(bytes, |block| unsafe { avx2::classes(block) });
    }
    classes_sse2(bytes)
}

/// [`classes`] sixteen bytes at a time (or byte by byte where there is no SSE2).
fn classes_sse2(bytes: &[u8]) -> Classes {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return with_block(bytes, |block| {
        let mut out = Classes::default();
        for (i, sixteen) in block.chunks_exact(16).enumerate() {
            let sixteen = sixteen.try_into().expect("chunks of sixteen");
            // SAFETY: as in `run_mask`.
            let (run, group, hex) = unsafe { sse2::class_bits(sixteen) };
            out.run |= u64::from(run) << (16 * i);
            out.group |= u64::from(group) << (16 * i);
            out.hex |= u64::from(hex) << (16 * i);
        }
        out
    });
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    Classes {
        run: by_byte(bytes, is_run),
        group: by_byte(bytes, is_group),
        hex: by_byte(bytes, |b| b.is_ascii_hexdigit()),
    }
}

/// Bit `i` set when `bytes[i]` is printable ([`is_printable`]); `bytes` is at most 64 long.
pub(crate) fn printable_mask(bytes: &[u8]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `run_mask`.
        by_sixteen(bytes, |b| unsafe { sse2::printable_bits(b) })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    by_byte(bytes, is_printable)
}

/// Bit `i` set when `bytes[i]` is `a` or `b`; `bytes` is at most 64 long.
fn either_mask(bytes: &[u8], a: u8, b: u8) -> u64 {
    // A short block is padded with zeros (`with_block`), which must match neither.
    debug_assert!(a != 0 && b != 0, "zero is the padding");
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: as in `run_mask`.
        by_sixteen(bytes, |sixteen| unsafe { sse2::either_bits(sixteen, a, b) })
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    by_byte(bytes, |c| c == a || c == b)
}

/// Where `a` or `b` occurs in `hay`, in order. Where they are dense (a model call's JSON has a
/// `:` every few words) a block of sixty-four is one mask and each stop a bit scan, where a
/// byte search would re-enter its loop at every hit; from a block with none, a byte search
/// skips to the next block that has one (prose, an image).
pub(crate) fn either_positions(hay: &[u8], a: u8, b: u8) -> impl Iterator<Item = usize> + '_ {
    let mut base = 0;
    let mut bits = either_mask(&hay[..hay.len().min(64)], a, b);
    std::iter::from_fn(move || {
        if bits == 0 {
            base += 64;
            bits = either_mask(&hay[base.min(hay.len())..hay.len().min(base + 64)], a, b);
        }
        if bits == 0 {
            // Two blocks with none: sparse. `base + 64` is a block's start, so the block of
            // the next hit holds none before it.
            let from = (base + 64).min(hay.len());
            base = (from + memchr::memchr2(a, b, &hay[from..])?) & !63;
            bits = either_mask(&hay[base..hay.len().min(base + 64)], a, b);
        }
        let at = base + bits.trailing_zeros() as usize;
        bits &= bits - 1;
        Some(at)
    })
}

/// `f` of `bytes` (at most 64) as a block of 64: a shorter slice (a decoded token, a layer's
/// last block) is copied into one whose other bytes are zero, which is in no class, so its
/// mask is the slice's. A copy and the vector compares cost less than a branch per byte.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn with_block<T>(bytes: &[u8], f: impl FnOnce(&[u8; 64]) -> T) -> T {
    match <&[u8; 64]>::try_from(bytes) {
        Ok(block) => f(block),
        Err(_) => {
            let mut block = [0u8; 64];
            let n = bytes.len().min(64);
            block[..n].copy_from_slice(&bytes[..n]);
            f(&block)
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn by_sixteen(bytes: &[u8], bits: impl Fn(&[u8; 16]) -> u16) -> u64 {
    with_block(bytes, |block| {
        block
            .chunks_exact(16)
            .enumerate()
            .fold(0, |mask, (i, sixteen)| {
                let sixteen = sixteen.try_into().expect("chunks of sixteen");
                mask | u64::from(bits(sixteen)) << (16 * i)
            })
    })
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn by_byte(bytes: &[u8], holds: impl Fn(u8) -> bool) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &b)| mask | u64::from(holds(b)) << i)
}

/// The classes for sixteen bytes at once (SSE2, which every x86-64 CPU has).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8,
    };

    #[target_feature(enable = "sse2")]
    fn load(bytes: &[u8; 16]) -> __m128i {
        let (lo, hi) = bytes.split_at(8);
        let word = |w: &[u8]| i64::from_le_bytes(w.try_into().expect("eight bytes"));
        _mm_set_epi64x(word(hi), word(lo))
    }

    /// Where `v` is `lo..=hi`. Signed compares: bytes from 0x80 up are negative and fall in
    /// no range used here.
    #[target_feature(enable = "sse2")]
    fn within(v: __m128i, lo: u8, hi: u8) -> __m128i {
        _mm_and_si128(
            _mm_cmpgt_epi8(v, _mm_set1_epi8((lo - 1) as i8)),
            _mm_cmpgt_epi8(_mm_set1_epi8((hi + 1) as i8), v),
        )
    }

    /// Bit `i` set when `bytes[i]` is a run byte.
    #[target_feature(enable = "sse2")]
    pub(super) fn run_bits(bytes: &[u8; 16]) -> u16 {
        let x = load(bytes);
        let is = |c: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8));
        // `| 0x20` folds the capitals onto the small letters (and nothing else onto them).
        let folded = _mm_or_si128(x, _mm_set1_epi8(0x20));
        let hits = _mm_or_si128(
            _mm_or_si128(within(x, b'/', b'9'), within(folded, b'a', b'z')),
            _mm_or_si128(
                _mm_or_si128(is(b'+'), is(b'-')),
                _mm_or_si128(is(b'='), is(b'_')),
            ),
        );
        _mm_movemask_epi8(hits) as u16
    }

    /// Run bytes, digits and capitals, hex digits (see `Classes`).
    #[target_feature(enable = "sse2")]
    pub(super) fn class_bits(bytes: &[u8; 16]) -> (u16, u16, u16) {
        let x = load(bytes);
        let folded = _mm_or_si128(x, _mm_set1_epi8(0x20));
        let digit = within(x, b'0', b'9');
        let run = run_bits(bytes);
        let group = _mm_or_si128(digit, within(x, b'A', b'Z'));
        let hex = _mm_or_si128(digit, within(folded, b'a', b'f'));
        (
            run,
            _mm_movemask_epi8(group) as u16,
            _mm_movemask_epi8(hex) as u16,
        )
    }

    /// Bit `i` set when `bytes[i]` is printable or ASCII whitespace.
    #[target_feature(enable = "sse2")]
    pub(super) fn text_bits(bytes: &[u8; 16]) -> u16 {
        let x = load(bytes);
        let is = |c: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8));
        let hits = _mm_or_si128(
            within(x, 0x20, 0x7e),
            _mm_or_si128(within(x, b'\t', b'\n'), _mm_or_si128(is(0x0c), is(b'\r'))),
        );
        _mm_movemask_epi8(hits) as u16
    }

    /// Bit `i` set when `bytes[i]` is printable.
    #[target_feature(enable = "sse2")]
    pub(super) fn printable_bits(bytes: &[u8; 16]) -> u16 {
        _mm_movemask_epi8(within(load(bytes), 0x20, 0x7e)) as u16
    }

    /// Bit `i` set when `bytes[i]` is `a` or `b`.
    #[target_feature(enable = "sse2")]
    pub(super) fn either_bits(bytes: &[u8; 16], a: u8, b: u8) -> u16 {
        let x = load(bytes);
        let is = |c: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(c as i8));
        _mm_movemask_epi8(_mm_or_si128(is(a), is(b))) as u16
    }
}

/// [`classes`] thirty-two bytes at a time, on CPUs with AVX2 (most x86-64 since 2013).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Classes;
    use std::arch::x86_64::{
        __m256i, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set_epi64x, _mm256_set1_epi8,
    };

    #[target_feature(enable = "avx2")]
    fn load(bytes: &[u8]) -> __m256i {
        let word =
            |i: usize| i64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("eight bytes"));
        _mm256_set_epi64x(word(3), word(2), word(1), word(0))
    }

    /// Where `v` is `lo..=hi` (signed compares, as in the SSE2 form).
    #[target_feature(enable = "avx2")]
    fn within(v: __m256i, lo: u8, hi: u8) -> __m256i {
        _mm256_and_si256(
            _mm256_cmpgt_epi8(v, _mm256_set1_epi8((lo - 1) as i8)),
            _mm256_cmpgt_epi8(_mm256_set1_epi8((hi + 1) as i8), v),
        )
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn classes(block: &[u8; 64]) -> Classes {
        let mut out = Classes::default();
        for (i, half) in block.chunks_exact(32).enumerate() {
            let x = load(half);
            let is = |c: u8| _mm256_cmpeq_epi8(x, _mm256_set1_epi8(c as i8));
            let folded = _mm256_or_si256(x, _mm256_set1_epi8(0x20));
            let digit = within(x, b'0', b'9');
            let run = _mm256_or_si256(
                _mm256_or_si256(within(x, b'/', b'9'), within(folded, b'a', b'z')),
                _mm256_or_si256(
                    _mm256_or_si256(is(b'+'), is(b'-')),
                    _mm256_or_si256(is(b'='), is(b'_')),
                ),
            );
            let group = _mm256_or_si256(digit, within(x, b'A', b'Z'));
            let hex = _mm256_or_si256(digit, within(folded, b'a', b'f'));
            let bits = |m: __m256i| u64::from(_mm256_movemask_epi8(m) as u32) << (32 * i);
            out.run |= bits(run);
            out.group |= bits(group);
            out.hex |= bits(hex);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask function and the byte test it must agree with.
    type Classifier = (&'static str, fn(&[u8]) -> u64, fn(u8) -> bool);

    #[test]
    fn the_masks_classify_every_byte_as_the_byte_tests_do() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let masks: [Classifier; 9] = [
            ("run", run_mask, is_run),
            ("printable", printable_mask, is_printable),
            ("text", text_mask, is_text),
            ("classes: run", |b| classes(b).run, is_run),
            ("classes: group", |b| classes(b).group, is_group),
            (
                "classes: hex",
                |b| classes(b).hex,
                |b| b.is_ascii_hexdigit(),
            ),
            // Both forms, whichever this CPU picks for `classes`.
            ("sse2 classes: run", |b| classes_sse2(b).run, is_run),
            ("sse2 classes: group", |b| classes_sse2(b).group, is_group),
            (
                "sse2 classes: hex",
                |b| classes_sse2(b).hex,
                |b| b.is_ascii_hexdigit(),
            ),
        ];
        for (name, mask, holds) in masks {
            for start in 0..all.len() {
                let bytes = &all[start..all.len().min(start + 64)];
                let want = bytes
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (i, &b)| m | u64::from(holds(b)) << i);
                assert_eq!(mask(bytes), want, "{name}, bytes from {start}");
            }
        }
    }

    #[test]
    fn either_positions_are_every_place_of_either_byte() {
        // Dense and sparse stretches, every length to a few blocks, hits at block edges.
        let mut x = 1u32;
        for density in [2u32, 9, 200, 5000] {
            for len in (0..400).chain([4096]) {
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        match (x >> 16) % density {
                            0 => b'=',
                            1 => b':',
                            _ => b'a',
                        }
                    })
                    .collect();
                let got: Vec<usize> = either_positions(&hay, b'=', b':').collect();
                let want: Vec<usize> = (0..hay.len())
                    .filter(|&i| matches!(hay[i], b'=' | b':'))
                    .collect();
                assert_eq!(got, want, "density {density}, length {len}");
            }
        }
    }
}
