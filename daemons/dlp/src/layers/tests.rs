//! Secrets wrapped the ways an agent would wrap them; every token is built at run time.

use super::*;
use crate::KnownSecret;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

fn token() -> String {
    // A GitHub PAT shape from its prefix and a fixed alphabet walk: no literal token here.
    let body: String = (0..36)
        .map(|i| char::from(b"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"[(i * 7) % 36]))
        .collect();
    format!("{}_{body}", "ghp")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn found(hay: &str) -> Option<String> {
    Scanner::new(&[]).inspect(hay.as_bytes()).map(|f| f.rule)
}

#[test]
fn a_token_is_found_behind_every_encoding_once_and_nested() {
    let t = token();
    let b32 = data_encoding::BASE32.encode(t.as_bytes());
    let cases = [
        format!("data={}", STANDARD.encode(&t)),
        format!("{{\"d\":\"{}\"}}", URL_SAFE_NO_PAD.encode(&t)),
        format!("x {} y", hex(t.as_bytes())),
        format!("x {} y", hex(t.as_bytes()).to_uppercase()),
        format!("d={b32}"),
        format!("d={}", b32.to_lowercase().trim_end_matches('=')),
        format!(
            "q={}",
            t.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
        ),
        format!(r#"{{"t":"\u0067{}"}}"#, &t[1..]),
        t.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>(),
        t.bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join("-"),
        t.bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        t.bytes()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(" "),
        // Three layers: base64 of hex of base64.
        STANDARD.encode(hex(STANDARD.encode(&t).as_bytes())),
        // Percent-encoded base64 (its + / = escaped), as a form would send it.
        format!(
            "v={}",
            STANDARD
                .encode(format!("{t}??>>"))
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        ),
    ];
    for hay in cases {
        let rule = found(&hay);
        assert!(
            rule.as_deref().is_some_and(|r| r.starts_with("github-pat")),
            "{hay} gave {rule:?}"
        );
    }
}

#[test]
fn mime_wrapped_base64_is_joined_before_decoding() {
    let t = token();
    let blob = STANDARD.encode(format!(
        "{} and the token {t} and more text after it to wrap",
        "x".repeat(80)
    ));
    let wrapped: Vec<&str> = blob
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let hay = wrapped.join("\r\n");
    assert!(
        found(&hay).is_some_and(|r| r.starts_with("github-pat")),
        "{hay}"
    );
}

#[test]
fn a_known_value_is_found_in_a_decoded_layer() {
    let scanner = Scanner::new(&[KnownSecret::new("EGRESS_TOKEN_0", "s3cr3t-t0ken-value-42")]);
    let hay = STANDARD.encode(hex(b"prefix s3cr3t-t0ken-value-42 suffix").as_bytes());
    assert_eq!(
        scanner.inspect(hay.as_bytes()).map(|f| f.rule),
        Some("secret:EGRESS_TOKEN_0 (hex) (in base64)".into())
    );
}

#[test]
fn wrapping_deeper_than_the_limit_is_a_finding_of_its_own() {
    let mut s = token();
    for _ in 0..=MAX_DEPTH {
        s = STANDARD.encode(s);
    }
    assert!(
        found(&s).is_some_and(|r| r.starts_with(TOO_DEEP)),
        "{:?}",
        found(&s)
    );
}

#[test]
fn clean_text_ids_digests_and_images_pass() {
    let png_like: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for hay in [
        "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 and tree 4b825dc642cb6eb9a060e54bf8d69288fbe4904".to_string(),
        "id 123e4567-e89b-12d3-a456-426614174000".to_string(),
        format!("{{\"image\":\"data:image/png;base64,{}\"}}", STANDARD.encode(&png_like)),
        "fn parse_manifest_from_reader(reader: impl Read) -> Result<Manifest, ParseError>".to_string(),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string(),
        "https://files.pythonhosted.org/packages/ab/cd/numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.whl".to_string(),
        "{\"model\":\"claude\",\"messages\":[{\"role\":\"user\",\"content\":\"fix the bug in src/main.rs\\nthanks\"}]}".to_string(),
    ] {
        assert_eq!(found(&hay), None, "{hay}");
    }
}

#[test]
fn a_decompression_of_layers_stops_at_the_budget() {
    let mut peel = Peel {
        scanner: &Scanner::new(&[]),
        skip: &|_| false,
        budget: 10,
    };
    let hay = STANDARD.encode("a long enough text to decode past ten bytes");
    assert_eq!(
        peel.layer(hay.as_bytes(), 0).map(|f| f.rule),
        Some(TOO_LARGE.into())
    );
}

#[test]
fn an_exception_passes_over_its_rule_and_never_hides_a_later_finding() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B;
    let jwt = format!(
        "{}.{}.{}",
        B.encode(br#"{"alg":"HS256"}"#),
        B.encode(br#"{"sub":"x"}"#),
        B.encode([9u8; 32])
    );
    let scanner = Scanner::new(&[]);
    let skip_jwt = |rule: &str| rule == "jwt";
    let inspector = scanner.inspector(&skip_jwt);
    assert_eq!(
        scanner.inspect(jwt.as_bytes()).map(|f| f.rule),
        Some("jwt".into())
    );
    assert_eq!(inspector.inspect(jwt.as_bytes()), None);
    let both = format!("{jwt} then {}", token());
    assert_eq!(
        inspector.inspect(both.as_bytes()).map(|f| f.rule),
        Some("github-pat".into())
    );
    let wrapped = STANDARD.encode(&both);
    assert_eq!(
        inspector.inspect(wrapped.as_bytes()).map(|f| f.rule),
        Some("github-pat (in base64)".into())
    );
}

#[test]
fn base64_wrapped_in_a_json_string_or_narrow_lines_is_joined() {
    let t = token();
    let blob = STANDARD.encode(format!(
        "{} the token {t} and text after it",
        "x".repeat(120)
    ));
    for width in [76, 20] {
        let lines: Vec<&str> = blob
            .as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for hay in [
            format!("{{\"c\":\"{}\"}}", lines.join("\\n")),
            lines.join("\n"),
        ] {
            assert!(
                found(&hay).is_some_and(|r| r.starts_with("github-pat")),
                "{hay}"
            );
        }
    }
}

#[test]
fn an_excepted_rule_never_hides_a_token_that_overlaps_it() {
    let stripe = format!("sk_{}_{}", "test", "Ab1".repeat(8));
    let hay = format!("{stripe}{}", token());
    let skip_stripe = |rule: &str| rule == "stripe-test-key";
    let scanner = Scanner::new(&[]);
    let found = scanner.inspector(&skip_stripe).inspect(hay.as_bytes());
    assert!(found.is_some_and(|f| f.rule.starts_with("github")), "{hay}");
    // Excepted whole: its near variant does not refuse it instead.
    assert_eq!(
        scanner.inspector(&skip_stripe).inspect(stripe.as_bytes()),
        None
    );
}

#[test]
fn pathological_input_stays_linear() {
    // Each would be quadratic if a detector rescanned the rest of the input at every anchor.
    for hay in [
        "eyJ".repeat(1 << 18),
        "TOKEN=".repeat(1 << 17),
        " ".repeat(1 << 20) + "=x",
    ] {
        assert_eq!(found(&hay), None);
    }
}

#[test]
fn binary_layers_are_unpacked_and_their_printable_stretches_peeled() {
    use std::io::Write;
    let t = token();
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let zlib = |b: &[u8]| {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let utf16: Vec<u8> = t.bytes().flat_map(|b| [b, 0]).collect();
    let mut padded = vec![0u8; 16];
    padded.extend_from_slice(STANDARD.encode(&t).as_bytes());
    padded.extend_from_slice(&[0xff; 8]);
    // Short enough (64 bytes or less) that hex of it is judged on the stack first: binary
    // that holds a secret must still be peeled.
    let mut zero_led = vec![0u8; 8];
    zero_led.extend_from_slice(t.as_bytes());
    for (what, inner) in [
        ("gzip", gz(t.as_bytes())),
        ("zlib", zlib(t.as_bytes())),
        ("utf-16", utf16),
        ("zero-padded base64", padded),
        ("zero-led", zero_led),
    ] {
        for hay in [
            format!("data={}", STANDARD.encode(&inner)),
            format!("data={}", hex(&inner)),
        ] {
            assert!(
                found(&hay).is_some_and(|r| r.starts_with("github-pat")),
                "{what} in {hay}: {:?}",
                found(&hay)
            );
        }
    }
    // A bomb inside a layer is a finding, not a pass.
    let bomb = gz(&vec![b'a'; UNPACKED_MAX + 1]);
    let hay = format!("d={}", STANDARD.encode(&bomb));
    assert!(
        found(&hay).is_some_and(|r| r.starts_with(TOO_LARGE)),
        "{:?}",
        found(&hay)
    );
    // A clean gzip'd text passes.
    let hay = format!(
        "d={}",
        STANDARD.encode(gz(b"just a readme, nothing secret in it at all"))
    );
    assert_eq!(found(&hay), None);
}

#[test]
fn printable_stretches_are_found_across_blocks_and_at_every_length() {
    // Printable stretches of every length from 1 to 150 between single binary bytes, so that
    // they start, end and cross the scan's 64-byte blocks everywhere.
    let mut hay = Vec::new();
    let mut want = Vec::new();
    for len in 1..150 {
        hay.push(0u8);
        let start = hay.len();
        hay.extend(std::iter::repeat_n(b'a', len));
        if len >= 8 {
            want.push((start, hay.len()));
        }
    }
    for cut in [hay.len(), hay.len() - 3, 64 * 40, 64 * 40 + 5] {
        let hay = &hay[..cut];
        let expected: Vec<(usize, usize)> = want
            .iter()
            .map(|&(s, e)| (s, e.min(cut)))
            .filter(|&(s, e)| e > s && e - s >= 8)
            .collect();
        assert_eq!(super::printable_stretches(hay, 8), expected, "cut at {cut}");
    }
    assert!(super::has_ones(0b1111_0111, 4) && !super::has_ones(0b1110_1110, 4));
    assert!(!super::has_ones(u64::MAX >> 1, 65));
}
