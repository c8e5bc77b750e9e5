//! HTTP bodies as the receiving server will read them: `Content-Encoding` undone (gzip,
//! deflate, br, zstd) within a bound, multipart parts split out with their own
//! `Content-Transfer-Encoding` undone. What cannot be decoded within the bounds is an error:
//! the caller refuses the body rather than pass what it could not read.

use base64::Engine;
use std::io::Read;

/// Why a body could not be read for scanning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// An encoding egress does not decode.
    #[error(
        "Content-Encoding {0} is not one bottle can scan (gzip, deflate, br, zstd and identity are)"
    )]
    UnknownEncoding(String),
    /// The encoded data is broken.
    #[error("the body is not valid {0}")]
    Corrupt(&'static str),
    /// Decoding would exceed the limit (a decompression bomb, or just too big to judge).
    #[error("the body decodes to more than {0} bytes, more than bottle scans")]
    TooLarge(usize),
    /// Bytes follow the end of the compressed stream: a decoder that stops at the end would
    /// leave them unread, and a server may still read them.
    #[error("the body has data after the end of its {0} stream; send one stream")]
    TrailingData(&'static str),
}

/// The body as the server reads it, after every `Content-Encoding` (listed outermost last, as
/// the header does), each output bounded by `limit` bytes.
pub fn decode_content(
    body: &[u8],
    content_encoding: &str,
    limit: usize,
) -> Result<Vec<u8>, ContentError> {
    decode_content_into(body, content_encoding, limit, Vec::new())
}

/// [`decode_content`] into `spare`, a buffer kept from an earlier body (its contents are
/// dropped): a caller that decodes body after body allocates, and the kernel maps and zeroes,
/// a large buffer once rather than per body.
pub fn decode_content_into(
    body: &[u8],
    content_encoding: &str,
    limit: usize,
    mut spare: Vec<u8>,
) -> Result<Vec<u8>, ContentError> {
    // Until a coding is undone the body itself is read: no copy of what may be all identity.
    let mut decoded: Option<Vec<u8>> = None;
    for coding in content_encoding.rsplit(',').map(str::trim) {
        let coding = coding.to_ascii_lowercase();
        if matches!(coding.as_str(), "" | "identity") {
            continue;
        }
        let data = decoded.as_deref().unwrap_or(body);
        let out = std::mem::take(&mut spare);
        // What compressed text usually grows to; gzip says its own size.
        let guess = data.len().saturating_mul(4);
        let out = match coding.as_str() {
            "gzip" | "x-gzip" => {
                let gz = flate2::read::MultiGzDecoder::new(data);
                bounded(gz, out, gzip_size(data).unwrap_or(guess), limit, "gzip")?
            }
            // "deflate" is zlib by the RFC; some clients send raw deflate. Both decoders read
            // the body in place (`bufread`), so what they leave unread is seen.
            "deflate" => {
                let zlib = flate2::bufread::ZlibDecoder::new(data);
                whole(zlib, out, guess, limit, "deflate", |d| d.get_ref().len()).or_else(|e| {
                    match e {
                        ContentError::Corrupt(_) => {
                            let raw = flate2::bufread::DeflateDecoder::new(data);
                            whole(raw, Vec::new(), guess, limit, "deflate", |d| {
                                d.get_ref().len()
                            })
                        }
                        other => Err(other),
                    }
                })?
            }
            "br" => brotli_whole(data, out, guess, limit)?,
            "zstd" => zstd_frames(data, out, guess, limit)?,
            other => return Err(ContentError::UnknownEncoding(other.to_string())),
        };
        // The layer before is spare now, for the next coding.
        if let Some(before) = decoded.replace(out) {
            spare = before;
        }
    }
    Ok(decoded.unwrap_or_else(|| {
        spare.clear();
        spare.extend_from_slice(body);
        spare
    }))
}

/// The size a gzip stream says its (last member's) data has: its trailer's ISIZE. A claim
/// only, used to size the output once rather than grow it by doubling.
fn gzip_size(data: &[u8]) -> Option<usize> {
    let trailer: [u8; 4] = data.get(data.len().checked_sub(4)?..)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(trailer)).ok()
}

/// The most an output is sized up front, whatever the stream claims: a claim costs no more
/// than this until the data is really there.
const PRESIZE_MAX: usize = 4 << 20;

/// Read `r` to the end, at most `limit` bytes, into `out` (emptied first) sized for about
/// `expected`.
fn bounded(
    r: impl Read,
    out: Vec<u8>,
    expected: usize,
    limit: usize,
    name: &'static str,
) -> Result<Vec<u8>, ContentError> {
    whole(r, out, expected, limit, name, |_| 0)
}

/// [`bounded`] for a decoder that stops at the end of its stream: the body is refused when
/// `unread` (what the decoder left of its input) is not nothing.
fn whole<R: Read>(
    mut r: R,
    mut out: Vec<u8>,
    expected: usize,
    limit: usize,
    name: &'static str,
    unread: impl Fn(&R) -> usize,
) -> Result<Vec<u8>, ContentError> {
    presize(&mut out, expected, limit);
    append_bounded(&mut r, &mut out, limit, name)?;
    if unread(&r) != 0 {
        return Err(ContentError::TrailingData(name));
    }
    Ok(out)
}

/// Every zstd frame of `data`, one after another, as a server that reads them all does. A
/// skippable frame, which such a server skips unread, is refused here rather than skipped.
fn zstd_frames(
    data: &[u8],
    mut out: Vec<u8>,
    expected: usize,
    limit: usize,
) -> Result<Vec<u8>, ContentError> {
    presize(&mut out, expected, limit);
    let mut rest = data;
    loop {
        // The decoder reads its input exactly: `rest` is left at the next frame.
        let mut frame = ruzstd::decoding::StreamingDecoder::new(&mut rest)
            .map_err(|_| ContentError::Corrupt("zstd"))?;
        append_bounded(&mut frame, &mut out, limit, "zstd")?;
        drop(frame);
        if rest.is_empty() {
            return Ok(out);
        }
    }
}

/// A brotli stream, decoded by the stream API rather than the `Read` adapter: the adapter
/// ends at the stream's end without a word about input left after it.
fn brotli_whole(
    data: &[u8],
    mut out: Vec<u8>,
    expected: usize,
    limit: usize,
) -> Result<Vec<u8>, ContentError> {
    use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
    presize(&mut out, expected, limit);
    let mut state = BrotliState::new(
        StandardAlloc::default(),
        StandardAlloc::default(),
        StandardAlloc::default(),
    );
    let (mut avail_in, mut in_offset, mut total) = (data.len(), 0usize, 0usize);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let (mut avail_out, mut out_offset) = (chunk.len(), 0usize);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut in_offset,
            data,
            &mut avail_out,
            &mut out_offset,
            &mut chunk,
            &mut total,
            &mut state,
        );
        if out.len() + out_offset > limit {
            return Err(ContentError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk[..out_offset]);
        match result {
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultSuccess if avail_in == 0 => return Ok(out),
            BrotliResult::ResultSuccess => return Err(ContentError::TrailingData("br")),
            BrotliResult::NeedsMoreInput | BrotliResult::ResultFailure => {
                return Err(ContentError::Corrupt("br"));
            }
        }
    }
}

/// Empty `out` and size it for about `expected` bytes.
fn presize(out: &mut Vec<u8>, expected: usize, limit: usize) {
    out.clear();
    // One more than the claim, so a true claim ends in the first buffer without a grow at EOF.
    out.reserve(expected.min(limit).min(PRESIZE_MAX).saturating_add(1));
}

/// Append what `r` reads to its end to `out`, refusing once `out` would exceed `limit`.
fn append_bounded(
    r: &mut impl Read,
    out: &mut Vec<u8>,
    limit: usize,
    name: &'static str,
) -> Result<(), ContentError> {
    let room = limit.saturating_sub(out.len());
    let cap = u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap)
        .read_to_end(out)
        .map_err(|_| ContentError::Corrupt(name))?;
    if out.len() > limit {
        return Err(ContentError::TooLarge(limit));
    }
    Ok(())
}

/// The boundary of a `multipart/*` content type, if it is one.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Each part of a multipart body: its headers and its content with the part's
/// `Content-Transfer-Encoding` (base64, quoted-printable) undone and its `Content-Encoding`
/// too. A nested multipart part is split in turn.
pub fn multipart_parts(
    body: &[u8],
    boundary: &str,
    limit: usize,
) -> Result<Vec<Vec<u8>>, ContentError> {
    let mut budget = limit;
    parts_within(body, boundary, limit, &mut budget, 0)
}

/// Multipart nested deeper than this is refused: no form needs it, a bomb would.
const MAX_NESTING: usize = 4;

/// [`multipart_parts`] with `budget` decoded bytes left for all parts together.
fn parts_within(
    body: &[u8],
    boundary: &str,
    limit: usize,
    budget: &mut usize,
    depth: usize,
) -> Result<Vec<Vec<u8>>, ContentError> {
    if depth > MAX_NESTING {
        return Err(ContentError::Corrupt("multipart (nested too deep)"));
    }
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut chunks = memchr::memmem::find_iter(body, delimiter.as_bytes()).peekable();
    while let Some(at) = chunks.next() {
        let Some(&next) = chunks.peek() else { break };
        let part = &body[at + delimiter.len()..next];
        let part = part
            .strip_prefix(b"\r\n")
            .or_else(|| part.strip_prefix(b"\n"))
            .unwrap_or(part);
        let part = part
            .strip_suffix(b"\r\n")
            .or_else(|| part.strip_suffix(b"\n"))
            .unwrap_or(part);
        let (head, content) = match memchr::memmem::find(part, b"\r\n\r\n") {
            Some(i) => (&part[..i], &part[i + 4..]),
            None => match memchr::memmem::find(part, b"\n\n") {
                Some(i) => (&part[..i], &part[i + 2..]),
                None => (&b""[..], part),
            },
        };
        let header = |name: &str| -> Option<String> {
            String::from_utf8_lossy(head).lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let mut data = match header("content-transfer-encoding").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v == "base64" => {
                let clean: Vec<u8> = content
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(&clean)
                    .map_err(|_| ContentError::Corrupt("base64 (a multipart part)"))?
            }
            Some(v) if v == "quoted-printable" => quoted_printable(content),
            _ => content.to_vec(),
        };
        if let Some(enc) = header("content-encoding") {
            data = decode_content(&data, &enc, (*budget).min(limit))?;
        }
        // One budget for every part: many parts each just under the limit are still bounded.
        *budget = budget
            .checked_sub(data.len())
            .ok_or(ContentError::TooLarge(limit))?;
        parts.push(head.to_vec());
        match header("content-type")
            .as_deref()
            .and_then(multipart_boundary)
        {
            Some(inner) => parts.extend(parts_within(&data, &inner, limit, budget, depth + 1)?),
            None => parts.push(data),
        }
    }
    Ok(parts)
}

/// RFC 2045 quoted-printable decoded; a bad escape is kept as it is.
fn quoted_printable(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'=' {
            if s.get(i + 1..i + 3) == Some(b"\r\n") {
                i += 3;
                continue;
            }
            if s.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let Some(v) = s.get(i + 1..i + 3).and_then(crate::layers::hex_byte) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `text` gzip'd.
    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_content_encoding_round_trips() {
        let text = b"hello world, hello world, hello world".repeat(10);
        assert_eq!(decode_content(&gz(&text), "gzip", 1 << 20).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode_content(&z.finish().unwrap(), "deflate", 1 << 20).unwrap(),
            text
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        assert_eq!(
            decode_content(&raw.finish().unwrap(), "deflate", 1 << 20).unwrap(),
            text
        );
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &text[..], &mut br, &Default::default()).unwrap();
        assert_eq!(decode_content(&br, "br", 1 << 20).unwrap(), text);
        let zs = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(decode_content(&zs, "zstd", 1 << 20).unwrap(), text);
        // Two layers, listed in the order they were applied.
        assert_eq!(decode_content(&gz(&br), "br, gzip", 1 << 20).unwrap(), text);
    }

    #[test]
    fn a_bomb_is_stopped_at_the_limit_and_garbage_is_an_error() {
        let zeros = vec![0u8; 64 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 256 << 10);
        assert_eq!(
            decode_content(&gz, "gzip", 8 << 20),
            Err(ContentError::TooLarge(8 << 20))
        );
        assert_eq!(
            decode_content(b"not gzip at all", "gzip", 1 << 20),
            Err(ContentError::Corrupt("gzip"))
        );
        assert!(matches!(
            decode_content(b"x", "compress", 1 << 20),
            Err(ContentError::UnknownEncoding(_))
        ));
    }

    /// A stream of nothing, then the secret in the clear: a decoder that stops at the end of
    /// the first stream would scan nothing and pass the secret on.
    #[test]
    fn data_after_a_compressed_stream_is_refused_or_read_never_passed_unread() {
        let secret = b"AWS_SECRET_ACCESS_KEY=the rest in the clear";
        let then = |mut stream: Vec<u8>| {
            stream.extend_from_slice(secret);
            stream
        };
        let zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        assert_eq!(
            decode_content(&then(zlib.finish().unwrap()), "deflate", 1 << 20),
            Err(ContentError::TrailingData("deflate"))
        );
        let raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        assert_eq!(
            decode_content(&then(raw.finish().unwrap()), "deflate", 1 << 20),
            Err(ContentError::TrailingData("deflate"))
        );
        assert!(decode_content(&then(gz(b"")), "gzip", 1 << 20).is_err());
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &b""[..], &mut br, &Default::default()).unwrap();
        assert_eq!(
            decode_content(&then(br), "br", 1 << 20),
            Err(ContentError::TrailingData("br"))
        );
        let empty = ruzstd::encoding::compress_to_vec(
            &b""[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert!(decode_content(&then(empty.clone()), "zstd", 1 << 20).is_err());
        // Frame after frame is read as a server reading them all does, and bounded as one.
        let mut frames = empty;
        frames.extend(ruzstd::encoding::compress_to_vec(
            &secret[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        assert_eq!(decode_content(&frames, "zstd", 1 << 20).unwrap(), secret);
        assert_eq!(
            decode_content(&frames, "zstd", secret.len() - 1),
            Err(ContentError::TooLarge(secret.len() - 1))
        );
    }

    #[test]
    fn a_gzip_trailer_that_lies_about_the_size_changes_nothing_but_the_first_buffer() {
        let body = b"the body, a few times over; ".repeat(1000);
        let honest = gz(&body);
        let n = honest.len();
        for claim in [0u32, 1, 7, u32::MAX] {
            let mut lying = honest.clone();
            lying[n - 4..].copy_from_slice(&claim.to_le_bytes());
            // flate2 checks ISIZE: a wrong one is corrupt, whatever size it claimed.
            assert_eq!(
                decode_content(&lying, "gzip", 1 << 20),
                Err(ContentError::Corrupt("gzip")),
                "{claim}"
            );
        }
        assert_eq!(decode_content(&honest, "gzip", 1 << 20).unwrap(), body);
        let out = decode_content(&honest, "gzip", 1 << 20).unwrap();
        assert!(
            out.capacity() <= body.len() + 1,
            "sized once from the trailer"
        );
        // A limit under the claim still stops there.
        assert_eq!(
            decode_content(&honest, "gzip", 1000),
            Err(ContentError::TooLarge(1000))
        );
        // No coding to undo: the body as it came.
        assert_eq!(decode_content(b"plain", "identity", 10).unwrap(), b"plain");
        assert_eq!(decode_content(b"plain", "", 10).unwrap(), b"plain");
    }

    #[test]
    fn a_kept_buffer_brings_nothing_of_its_last_body() {
        let stale = b"what the body before decoded to, longer than what comes next".to_vec();
        let out = decode_content_into(&gz(b"next"), "gzip", 1 << 20, stale.clone()).unwrap();
        assert_eq!(out, b"next");
        // Two codings: each layer in its own buffer, the kept one among them.
        let twice = gz(&gz(b"inner"));
        let out = decode_content_into(&twice, "gzip, gzip", 1 << 20, stale.clone()).unwrap();
        assert_eq!(out, b"inner");
        // Nothing to undo: the body itself.
        let out = decode_content_into(b"as sent", "identity", 1 << 20, stale.clone()).unwrap();
        assert_eq!(out, b"as sent");
        // Errors are the same as without a kept buffer.
        assert_eq!(
            decode_content_into(b"not gzip", "gzip", 1 << 20, stale),
            Err(ContentError::Corrupt("gzip"))
        );
    }

    #[test]
    fn multipart_parts_come_out_decoded() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"the secret part of the form");
        let body = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nplain value\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n{}\r\n\
             --XyZ\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak =3D done\r\n--XyZ--\r\n",
            &b64[..20],
            &b64[20..]
        );
        let boundary = multipart_boundary("multipart/form-data; boundary=\"XyZ\"").unwrap();
        let parts = multipart_parts(body.as_bytes(), &boundary, 1 << 20).unwrap();
        let contents: Vec<&[u8]> = parts.iter().skip(1).step_by(2).map(Vec::as_slice).collect();
        assert_eq!(
            contents,
            [
                &b"plain value"[..],
                b"the secret part of the form",
                b"softbreak = done"
            ]
        );
        assert_eq!(multipart_boundary("application/json"), None);
    }

    #[test]
    fn parts_share_one_budget_and_nesting_is_bounded() {
        let part = |content: &str| format!("--b\r\n\r\n{content}\r\n");
        let body = format!(
            "{}{}--b--\r\n",
            part(&"a".repeat(600)),
            part(&"b".repeat(600))
        );
        assert_eq!(
            multipart_parts(body.as_bytes(), "b", 1000),
            Err(ContentError::TooLarge(1000))
        );
        assert!(multipart_parts(body.as_bytes(), "b", 2000).is_ok());
        // Multipart in multipart, deeper than any form needs.
        let mut nested = "leaf".to_string();
        for i in (0..8).rev() {
            nested = format!(
                "--n{i}\r\nContent-Type: multipart/mixed; boundary=n{}\r\n\r\n{nested}\r\n--n{i}--\r\n",
                i + 1
            );
        }
        let err = multipart_parts(nested.as_bytes(), "n0", 1 << 20).unwrap_err();
        assert_eq!(err, ContentError::Corrupt("multipart (nested too deep)"));
    }
}
