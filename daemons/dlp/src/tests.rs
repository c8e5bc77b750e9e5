//! Every token below is generated at run time from its prefix and alphabet: a literal
//! real-looking token in the repository would trip GitHub push protection and our own git-gate.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM_UNDERSCORE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
const ALNUM_DASH: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";
const TOKEN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const UPPER_DIGIT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const DIGITS: &str = "0123456789";
const HEX_LOWER: &str = "0123456789abcdef";
const HEX_MIXED: &str = "0123456789abcdefABCDEF";

/// The shared generator, with byte output for these tests.
struct Rng(crate::testing::Lcg);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(crate::testing::Lcg(seed))
    }

    fn pick(&mut self, alphabet: &str, n: usize) -> Vec<u8> {
        self.0.pick(alphabet, n).into_bytes()
    }
}

/// One piece of a token shape.
#[derive(Clone, Copy)]
enum Seg {
    Lit(&'static str),
    /// Characters from an alphabet, between a minimum and a maximum count.
    Run(&'static str, usize, usize),
}
use Seg::{Lit, Run};

/// The shapes each rule must match, one per anchor (and per notable variant).
fn shapes(id: &str) -> Vec<Vec<Seg>> {
    let each = |prefixes: &[&'static str], rest: &[Seg]| -> Vec<Vec<Seg>> {
        prefixes
            .iter()
            .map(|p| {
                let mut v = vec![Lit(p)];
                v.extend_from_slice(rest);
                v
            })
            .collect()
    };
    match id {
        "github-pat" => each(&["ghp_"], &[Run(ALNUM, 36, 36)]),
        "github-oauth" => each(&["gho_"], &[Run(ALNUM, 36, 36)]),
        "github-app-token" => each(&["ghu_", "ghs_", "ghr_"], &[Run(ALNUM, 36, 36)]),
        "github-fine-grained-pat" => each(&["github_pat_"], &[Run(ALNUM_UNDERSCORE, 82, 82)]),
        "aws-access-key-id" => each(
            &["AKIA", "ASIA", "ABIA", "ACCA"],
            &[Run(UPPER_DIGIT, 16, 16)],
        ),
        "aws-secret-access-key" => vec![
            vec![
                Lit("aws_secret_access_key"),
                Lit(" = "),
                Run(BASE64, 40, 40),
            ],
            vec![
                Lit("AWS_SECRET_ACCESS_KEY"),
                Lit("=\""),
                Run(BASE64, 40, 40),
            ],
            vec![Lit("SecretAccessKey"), Lit("\": \""), Run(BASE64, 40, 40)],
            vec![Lit("secretAccessKey"), Lit("':'"), Run(BASE64, 40, 40)],
        ],
        "slack-token" => each(
            &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
            &[Run(DIGITS, 1, 20), Lit("-"), Run(ALNUM_DASH, 10, 240)],
        ),
        "slack-webhook" => vec![vec![
            Lit("hooks.slack.com/services/T"),
            Run(UPPER_DIGIT, 6, 12),
            Lit("/B"),
            Run(UPPER_DIGIT, 6, 12),
            Lit("/"),
            Run(ALNUM, 20, 32),
        ]],
        "anthropic-api-key" => each(&["sk-ant-api03-"], &[Run(TOKEN, 40, 200)]),
        "anthropic-admin-key" => each(&["sk-ant-admin01-"], &[Run(TOKEN, 40, 200)]),
        "anthropic-oauth-token" => {
            each(&["sk-ant-oat01-", "sk-ant-ort01-"], &[Run(TOKEN, 40, 200)])
        }
        "openai-project-key" => each(&["sk-proj-"], &[Run(TOKEN, 40, 250)]),
        "openai-service-account-key" => each(&["sk-svcacct-"], &[Run(TOKEN, 40, 250)]),
        "openai-api-key" => each(&["sk-"], &[Run(ALNUM, 48, 48)]),
        "google-api-key" => each(&["AIza"], &[Run(TOKEN, 35, 35)]),
        "stripe-live-key" => each(&["sk_live_", "rk_live_"], &[Run(ALNUM, 24, 247)]),
        "stripe-test-key" => each(&["sk_test_", "rk_test_"], &[Run(ALNUM, 24, 247)]),
        "gitlab-pat" => each(&["glpat-"], &[Run(TOKEN, 20, 128)]),
        "npm-token" => each(&["npm_"], &[Run(ALNUM, 36, 36)]),
        "pypi-token" => each(&["pypi-AgEIcHlwaS5vcmc"], &[Run(TOKEN, 50, 256)]),
        "huggingface-token" => each(&["hf_"], &[Run(LETTERS, 34, 34)]),
        "sendgrid-api-key" => each(
            &["SG."],
            &[Run(TOKEN, 22, 22), Lit("."), Run(TOKEN, 43, 43)],
        ),
        "private-key" => {
            let mut v: Vec<Vec<Seg>> = ["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED "]
                .into_iter()
                .map(|kind| vec![Lit("-----BEGIN "), Lit(kind), Lit("PRIVATE KEY-----")])
                .collect();
            v.push(vec![
                Lit("-----BEGIN "),
                Lit("PGP "),
                Lit("PRIVATE KEY"),
                Lit(" BLOCK-----"),
            ]);
            v
        }
        "digitalocean-token" => each(
            &["dop_v1_", "doo_v1_", "dor_v1_"],
            &[Run(HEX_LOWER, 64, 64)],
        ),
        "shopify-token" => each(
            &["shpat_", "shpss_", "shpca_", "shppa_"],
            &[Run(HEX_MIXED, 32, 32)],
        ),
        // Near variants: lengths the strict rules refuse, so the near id is what is found.
        "github-token-near" => each(
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
            &[Run(ALNUM, 20, 60)],
        ),
        "github-fine-grained-pat-near" => each(&["github_pat_"], &[Run(ALNUM_UNDERSCORE, 30, 81)]),
        "aws-access-key-id-near" => each(
            &["AKIA", "ASIA", "ABIA", "ACCA"],
            &[Run(UPPER_DIGIT, 12, 15)],
        ),
        "anthropic-key-near" => each(
            &["sk-ant-"],
            &[
                Run("abcdefghijklmnopqrstuvwxyz", 2, 8),
                Lit("-"),
                Run(TOKEN, 20, 39),
            ],
        ),
        "openai-key-near" => each(
            &["sk-proj-", "sk-svcacct-", "sk-admin-"],
            &[Run(TOKEN, 20, 39)],
        ),
        "slack-token-near" => each(
            &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
            &[Run(LETTERS, 10, 240)],
        ),
        "gitlab-pat-near" => each(&["glpat-"], &[Run(TOKEN, 12, 19)]),
        "stripe-key-near" => each(
            &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
            &[Run(ALNUM, 12, 23)],
        ),
        "npm-token-near" => each(&["npm_"], &[Run(ALNUM, 24, 35)]),
        _ => Vec::new(),
    }
}

/// Hand-picked misses beyond the generic ones (too short, wrong prefix, glued to a word).
fn extra_misses(id: &str, rng: &mut Rng) -> Vec<Vec<u8>> {
    let cat = |parts: &[&[u8]]| parts.concat();
    match id {
        "aws-secret-access-key" => vec![
            // No assignment: prose about the variable, not a value.
            cat(&[b"aws_secret_access_key ", &rng.pick(BASE64, 40)]),
            cat(&[b"the key is ", &rng.pick(BASE64, 40)]),
        ],
        "aws-access-key-id" => vec![cat(&[b"AKIA", &rng.pick("abcdefghijklmnop", 16)])],
        "slack-token" => vec![cat(&[b"xoxb-", &rng.pick(LETTERS, 30)])],
        "private-key" => vec![
            cat(&[b"-----BEGIN ", b"PUBLIC KEY-----"]),
            cat(&[b"-----BEGIN ", b"CERTIFICATE-----"]),
            cat(&[b"----BEGIN ", b"PRIVATE KEY-----"]),
            cat(&[b"-----BEGIN ", b"RSA PUBLIC KEY-----"]),
        ],
        "openai-api-key" => vec![
            cat(&[b"sk-", &rng.pick(ALNUM, 47)]),
            cat(&[b"task-", &rng.pick(ALNUM, 48)]),
        ],
        "huggingface-token" => vec![cat(&[b"hf_", &rng.pick(DIGITS, 34)])],
        "digitalocean-token" => vec![cat(&[b"dop_v2_", &rng.pick(HEX_LOWER, 64)])],
        _ => Vec::new(),
    }
}

/// The shape filled with minimum (`longest == false`) or maximum counts.
fn fill(shape: &[Seg], longest: bool, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for seg in shape {
        match *seg {
            Lit(s) => out.extend_from_slice(s.as_bytes()),
            Run(alphabet, min, max) => {
                out.extend(rng.pick(alphabet, if longest { max } else { min }))
            }
        }
    }
    out
}

fn rule(id: &str) -> &'static Rule {
    RULES.iter().find(|r| r.id == id).expect("rule exists")
}

fn finding(rule: &str, start: usize, end: usize) -> Finding {
    Finding {
        rule: rule.to_string(),
        start,
        end,
    }
}

fn secret(name: &str, value: &[u8]) -> KnownSecret {
    KnownSecret::new(name, value)
}

#[test]
fn every_rule_compiles_and_ids_are_unique_kebab_case() {
    let scanner = Scanner::new(&[]);
    let ids = scanner.rule_ids();
    assert_eq!(ids.len(), RULES.len());
    for (i, id) in ids.iter().enumerate() {
        assert!(!ids[..i].contains(id), "duplicate rule id {id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{id}"
        );
    }
    for r in RULES {
        assert!(!r.anchors.is_empty(), "{} has no anchor", r.id);
        // Two-byte anchors (`SK`) would turn the automaton's prefilter off for every rule.
        assert!(r.anchors.iter().all(|a| a.len() >= 3), "{}", r.id);
    }
    assert!(Scanner::known_only(&[]).rule_ids().is_empty());
}

#[test]
fn every_rule_and_anchor_has_a_generated_example() {
    let mut rng = Rng::new(1);
    for r in RULES {
        let shapes = shapes(r.id);
        assert!(!shapes.is_empty(), "no test shapes for rule {}", r.id);
        for anchor in r.anchors {
            assert!(
                shapes
                    .iter()
                    .any(|s| fill(s, false, &mut rng).starts_with(anchor.as_bytes())),
                "rule {} anchor {anchor} untested",
                r.id
            );
        }
    }
}

#[test]
fn every_rule_finds_its_tokens_shortest_and_longest() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(2);
    for r in RULES {
        let mut longest = 0;
        for shape in shapes(r.id) {
            for long in [false, true] {
                let token = fill(&shape, long, &mut rng);
                longest = longest.max(token.len());
                assert!(token.len() <= r.max_len, "{}: max_len too small", r.id);
                let shown = String::from_utf8_lossy(&token).into_owned();
                assert_eq!(
                    scanner.scan_all(&token),
                    vec![finding(r.id, 0, token.len())],
                    "{shown}"
                );
                let hay = [b"key: ".as_slice(), &token, b"\n"].concat();
                assert_eq!(
                    scanner.scan(&hay),
                    Some(finding(r.id, 5, 5 + token.len())),
                    "{shown}"
                );
            }
        }
        // The bound is exact wherever one shape reaches it, so the stream carry is not wasted.
        if !matches!(r.id, "aws-secret-access-key" | "private-key") && !r.id.ends_with("-near") {
            assert_eq!(longest, r.max_len, "{}: max_len is not tight", r.id);
        }
    }
}

#[test]
fn every_rule_rejects_near_misses() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(3);
    for r in RULES {
        let mut misses = extra_misses(r.id, &mut rng);
        for shape in shapes(r.id) {
            let token = fill(&shape, false, &mut rng);
            if matches!(shape.last(), Some(Run(..))) {
                misses.push(token[..token.len() - 1].to_vec());
            }
            let mut wrong_prefix = token.clone();
            wrong_prefix[0] = b'Q';
            misses.push(wrong_prefix);
            if r.before != rules::Edge::Any {
                misses.push([b"a".as_slice(), &token].concat());
                misses.push([b"my_".as_slice(), &token].concat());
            }
            if r.after != rules::Edge::Any {
                misses.push([token.as_slice(), b"a"].concat());
            }
        }
        // A near miss of a strict rule may be a near variant's finding, never the strict id.
        for miss in misses {
            let found = scanner.scan_all(&miss);
            assert!(
                !found.iter().any(|f| f.rule == r.id),
                "{}: {} gave {found:?}",
                r.id,
                String::from_utf8_lossy(&miss)
            );
        }
    }
}

#[test]
fn anthropic_keys_are_not_also_openai_keys() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(4);
    let key = [b"sk-ant-api03-".as_slice(), &rng.pick(ALNUM, 95)].concat();
    assert_eq!(
        scanner.scan_all(&key),
        vec![finding("anthropic-api-key", 0, key.len())]
    );
}

#[test]
fn several_findings_come_in_order_without_overlap() {
    let scanner = Scanner::new(&[secret("TOKEN", b"my-own-token-value")]);
    let mut rng = Rng::new(5);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    let npm = [b"npm_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    let hay = [
        b"a=".as_slice(),
        &gh,
        b"&b=my-own-token-value&c=",
        &npm,
        b"&d=",
        &gh,
    ]
    .concat();
    let all = scanner.scan_all(&hay);
    let rules: Vec<&str> = all.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["github-pat", "secret:TOKEN", "npm-token", "github-pat"]
    );
    assert_eq!(all[0], finding("github-pat", 2, 42));
    assert!(all.windows(2).all(|w| w[0].end <= w[1].start));
    assert_eq!(scanner.scan(&hay), Some(all[0].clone()));
}

/// A value whose base64 uses `+` and `/`, so the URL-safe forms differ from the standard ones.
const VALUE: &[u8] = b"tok>>>??~~~en-value/+";

fn known_scanner() -> Scanner {
    Scanner::known_only(&[secret("EGRESS_TOKEN_0", VALUE)])
}

#[test]
fn a_known_value_is_found_raw_and_named() {
    let hay = [b"Authorization: Bearer ".as_slice(), VALUE, b"\r\n"].concat();
    for scanner in [
        known_scanner(),
        Scanner::new(&[secret("EGRESS_TOKEN_0", VALUE)]),
    ] {
        assert_eq!(
            scanner.scan(&hay),
            Some(finding("secret:EGRESS_TOKEN_0", 22, 22 + VALUE.len()))
        );
    }
}

#[test]
fn a_known_value_is_found_in_base64_forms() {
    let scanner = known_scanner();
    assert_ne!(STANDARD.encode(VALUE), URL_SAFE.encode(VALUE));
    for (encoded, label) in [
        (STANDARD.encode(VALUE), "secret:EGRESS_TOKEN_0 (base64)"),
        (
            STANDARD_NO_PAD.encode(VALUE),
            "secret:EGRESS_TOKEN_0 (base64)",
        ),
        (URL_SAFE.encode(VALUE), "secret:EGRESS_TOKEN_0 (base64url)"),
        (
            URL_SAFE_NO_PAD.encode(VALUE),
            "secret:EGRESS_TOKEN_0 (base64url)",
        ),
    ] {
        let hay = format!("data={encoded}&x=1");
        let f = scanner.scan(hay.as_bytes()).expect(&hay);
        assert_eq!(f.rule, label, "{hay}");
        assert_eq!(f.start, 5, "{hay}");
        assert!(
            f.end <= 5 + encoded.len() && f.end + 4 >= 5 + encoded.len(),
            "{f}"
        );
    }
}

#[test]
fn a_known_value_is_found_inside_basic_auth_at_every_alignment() {
    let scanner = known_scanner();
    for user in ["x", "ab", "abc", "x-access-token"] {
        let credentials = [user.as_bytes(), b":", VALUE].concat();
        let hay = format!("Authorization: Basic {}\r\n", STANDARD.encode(&credentials));
        let f = scanner.scan(hay.as_bytes()).expect(&hay);
        assert_eq!(f.rule, "secret:EGRESS_TOKEN_0 (base64)", "{user}");
    }
}

#[test]
fn a_known_value_is_found_hex_and_percent_encoded() {
    let scanner = known_scanner();
    let lower: String = VALUE.iter().map(|b| format!("{b:02x}")).collect();
    let upper = lower.to_ascii_uppercase();
    for hex in [&lower, &upper] {
        let hay = format!("id={hex};");
        assert_eq!(
            scanner.scan(hay.as_bytes()),
            Some(finding("secret:EGRESS_TOKEN_0 (hex)", 3, 3 + hex.len()))
        );
    }
    let pct = "tok%3E%3E%3E%3F%3F~~~en-value%2F%2B";
    for p in [pct.to_string(), lowercase_escapes(pct)] {
        let hay = format!("GET /x?t={p} HTTP/1.1");
        assert_eq!(
            scanner.scan(hay.as_bytes()),
            Some(finding(
                "secret:EGRESS_TOKEN_0 (percent-encoded)",
                9,
                9 + p.len()
            )),
            "{hay}"
        );
    }
}

/// `%2F` to `%2f`, leaving the rest alone.
fn lowercase_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut hex_left = 0;
    for c in s.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn percent_encoding_is_not_added_when_it_equals_the_raw_value() {
    let forms = known::forms(b"plain-value_1.2~3");
    assert!(
        forms
            .iter()
            .all(|(_, label)| *label != " (percent-encoded)")
    );
}

#[test]
fn short_known_values_are_ignored() {
    let scanner = Scanner::known_only(&[secret("SHORT", b"abc1234")]);
    assert_eq!(scanner.scan(b"xx abc1234 xx"), None);
    assert_eq!(scanner.max_match_len(), 0);
    let eight = Scanner::known_only(&[secret("EIGHT", b"abc12345")]);
    assert_eq!(
        eight.scan(b"xx abc12345 xx"),
        Some(finding("secret:EIGHT", 3, 11))
    );
}

#[test]
fn known_only_ignores_token_patterns() {
    let mut rng = Rng::new(6);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    assert_eq!(known_scanner().scan(&gh), None);
    assert!(Scanner::new(&[]).scan(&gh).is_some());
}

#[test]
fn a_known_value_equal_to_an_anchor_is_found_and_the_rule_still_works() {
    let scanner = Scanner::new(&[secret("ODD", b"github_pat_")]);
    assert_eq!(
        scanner.scan(b"x github_pat_ y"),
        Some(finding("secret:ODD", 2, 13))
    );
    let mut rng = Rng::new(7);
    let pat = [b"github_pat_".as_slice(), &rng.pick(ALNUM, 82)].concat();
    // The longer rule match at the same offset loses to the named secret: both block.
    assert_eq!(
        scanner.scan(&pat).map(|f| f.rule),
        Some("secret:ODD".into())
    );
    assert_eq!(
        Scanner::new(&[]).scan(&pat),
        Some(finding("github-fine-grained-pat", 0, 93))
    );
}

#[test]
fn findings_and_debug_output_never_show_the_value() {
    let known = [secret("EGRESS_TOKEN_0", VALUE)];
    let scanner = Scanner::new(&known);
    let shown = String::from_utf8_lossy(VALUE).into_owned();
    let forms: Vec<String> = known::forms(VALUE)
        .into_iter()
        .map(|(f, _)| String::from_utf8_lossy(&f).into_owned())
        .collect();
    let mut texts = vec![format!("{:?}", known[0]), format!("{scanner:?}")];
    for (bytes, _) in known::forms(VALUE) {
        let hay = [b"x ".as_slice(), &bytes, b" y"].concat();
        let f = scanner.scan(&hay).expect("found");
        assert!(f.to_string().starts_with("secret:EGRESS_TOKEN_0"));
        texts.push(f.to_string());
        texts.push(format!("{f:?}"));
        let mut stream = scanner.stream();
        stream.push(&hay[..4]);
        texts.push(format!("{stream:?}"));
    }
    for text in texts {
        assert!(!text.contains(&shown), "{text}");
        for form in &forms {
            assert!(!text.contains(form.as_str()), "{text}");
        }
    }
    assert_eq!(
        finding("github-pat", 10, 50).to_string(),
        "github-pat at bytes 10..50"
    );
}

/// Pushes `parts` in turn and collects every finding `push` reports.
fn pushed(scanner: &Scanner, parts: &[&[u8]]) -> Vec<Finding> {
    let mut stream = scanner.stream();
    let found: Vec<Finding> = parts.iter().filter_map(|p| stream.push(p)).collect();
    assert_eq!(
        stream.position(),
        parts.iter().map(|p| p.len()).sum::<usize>()
    );
    found
}

/// Splits `hay` into two and three chunks at every position; the one secret in it must be
/// reported exactly once, where a whole scan puts it (an open-ended token may end earlier).
fn assert_found_at_every_split(scanner: &Scanner, hay: &[u8], three: bool) {
    let whole = scanner.scan_all(hay);
    assert_eq!(whole.len(), 1, "{whole:?}");
    let want = &whole[0];
    let check = |got: Vec<Finding>, at: &str| {
        assert_eq!(got.len(), 1, "split {at}: {got:?}");
        let f = &got[0];
        // Cut at the chunk's end, a token may be reported by its near variant first.
        assert_eq!(f.start, want.start, "split {at}");
        assert!(
            f.rule == want.rule || f.rule.ends_with("-near"),
            "split {at}: {f}"
        );
        assert!(f.start < f.end && f.end <= want.end, "split {at}: {f}");
    };
    for i in 0..=hay.len() {
        let (a, b) = hay.split_at(i);
        check(pushed(scanner, &[a, b]), &format!("{i}"));
        if three {
            for j in i..=hay.len() {
                let got = pushed(scanner, &[&hay[..i], &hay[i..j], &hay[j..]]);
                check(got, &format!("{i},{j}"));
            }
        }
    }
}

#[test]
fn a_secret_split_across_chunks_is_found_with_stream_offsets() {
    let known = [secret("EGRESS_TOKEN_0", VALUE)];
    let scanner = Scanner::new(&known);
    let mut rng = Rng::new(8);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    let pypi = [b"pypi-AgEIcHlwaS5vcmc".as_slice(), &rng.pick(TOKEN, 60)].concat();
    let pem = [b"-----BEGIN ".as_slice(), b"OPENSSH PRIVATE KEY-----"].concat();
    let basic = format!(
        "Basic {}",
        STANDARD.encode([b"u:".as_slice(), VALUE].concat())
    );
    let cases: Vec<Vec<u8>> = vec![
        [b"GET /?q=".as_slice(), &gh, b" HTTP/1.1\r\n"].concat(),
        gh.clone(),
        [b"data=".as_slice(), VALUE, b"&more"].concat(),
        [b"Authorization: ".as_slice(), basic.as_bytes(), b"\r\n"].concat(),
        [b"key\n".as_slice(), &pem, b"\nAAAA"].concat(),
        [b"t=".as_slice(), &pypi, b"\n"].concat(),
    ];
    for hay in &cases {
        assert_found_at_every_split(&scanner, hay, true);
    }
    // Tokens that really are fixed-length report the same span as a whole scan, unless the
    // split cut them where their near variant already holds (reported at once: the safe side).
    let hay = &cases[0];
    for i in 0..=hay.len() {
        let got = pushed(&scanner, &[&hay[..i], &hay[i..]]);
        assert!(
            got == vec![finding("github-pat", 8, 48)]
                || got == vec![finding("github-token-near", 8, i)],
            "split {i}: {got:?}"
        );
    }
}

#[test]
fn a_long_token_split_anywhere_is_found() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(9);
    let token = fill(&shapes("pypi-token")[0], true, &mut rng);
    let hay = [b"x ".as_slice(), &token, b" y"].concat();
    assert_found_at_every_split(&scanner, &hay, false);
}

#[test]
fn a_stream_reports_every_finding_once_with_push_all() {
    let scanner = Scanner::new(&[secret("TOKEN", b"my-own-token-value")]);
    let mut rng = Rng::new(10);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    let filler = rng.pick("abc ", 500);
    let hay = [
        gh.as_slice(),
        b" ",
        &filler,
        b" my-own-token-value ",
        &filler,
        b" ",
        &gh,
    ]
    .concat();
    let whole = scanner.scan_all(&hay);
    assert_eq!(whole.len(), 3);
    for size in [1, 7, 64, 4096] {
        let mut stream = scanner.stream();
        let got: Vec<Finding> = hay.chunks(size).flat_map(|c| stream.push_all(c)).collect();
        let same = |a: &Finding, b: &Finding| {
            a.start == b.start && (a.rule == b.rule || a.rule.ends_with("-near"))
        };
        assert!(
            got.len() == whole.len() && got.iter().zip(&whole).all(|(a, b)| same(a, b)),
            "chunks of {size}: {got:?}"
        );
    }
}

#[test]
fn scan_after_skips_what_the_caller_already_scanned() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(11);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    // The tail a caller kept starts inside a longer identifier: not a token, not new.
    let hay = [&gh[..], b" and more"].concat();
    assert_eq!(scanner.scan_after(&hay, gh.len()), None);
    assert_eq!(
        scanner.scan_after(&hay, gh.len() - 1),
        Some(finding("github-pat", 0, 40))
    );
}

/// Lorem-style text with every anchor sprinkled in, but no token after any of them.
fn lorem(len: usize, rng: &mut Rng) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
        "task",
        "ask-me",
        "SKU",
        "desk-",
        "risk-free",
        "SKIP",
        "sk-",
        "ghp_",
        "gho_",
        "github_pat_",
        "AKIA",
        "ASIA",
        "hf_",
        "xoxb-",
        "SG.",
        "-----BEGIN",
        "npm_",
        "AIza",
        "glpat-",
        "pypi-",
        "hooks.slack.com/services/",
        "SecretAccessKey",
        "aws_secret_access_key:",
        "dop_v1_",
        "shpat_",
        "sk_live_",
        "sk-proj-",
        "sk-ant-api03-",
        "ASKING",
        "MASKED",
        "AKIAS",
        "=",
        "\n",
        "0123456789abcdef",
        "deadbeefcafebabe",
    ];
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.0.next_u32() as usize % WORDS.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

#[test]
fn a_mebibyte_of_clean_data_gives_no_finding() {
    let known = [
        secret("EGRESS_TOKEN_0", VALUE),
        secret("EGRESS_TOKEN_1", b"another-credential-1234"),
    ];
    let scanner = Scanner::new(&known);
    let mut rng = Rng::new(12);
    let text = lorem(1 << 20, &mut rng);
    let random: Vec<u8> = (0..1 << 20)
        .map(|_| (rng.0.next_u32() >> 7) as u8)
        .collect();
    let alnum = rng.pick(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ",
        1 << 20,
    );
    for (what, hay) in [("text", &text), ("random", &random), ("alnum", &alnum)] {
        assert_eq!(scanner.scan_all(hay), vec![], "{what}");
        let mut stream = scanner.stream();
        for chunk in hay.chunks(4096) {
            assert_eq!(stream.push(chunk), None, "{what}");
        }
    }
}

#[test]
fn non_utf8_input_works() {
    let known = [secret(
        "BINARY",
        &[0x80, 0x81, 0xfe, 0xff, 0x00, 0xc3, 0x28, 0x90],
    )];
    let scanner = Scanner::new(&known);
    let mut rng = Rng::new(13);
    let gh = [b"ghp_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    let hay = [b"\xff\xfe\x00".as_slice(), &gh, b"\xc3\x28\x80"].concat();
    assert_eq!(scanner.scan_all(&hay), vec![finding("github-pat", 3, 43)]);
    let raw = [b"\xc0\xc1".as_slice(), &known[0].value, b"\xf5"].concat();
    assert_eq!(scanner.scan(&raw), Some(finding("secret:BINARY", 2, 10)));
    let hex = b"\xfe 8081feff00c32890 \xfe";
    assert_eq!(
        scanner.scan(hex),
        Some(finding("secret:BINARY (hex)", 2, 18))
    );
    assert_eq!(scanner.scan(b"\xff\xfe\x80\x81\xfe"), None);
}

#[test]
fn empty_input_and_empty_scanner_are_fine() {
    let scanner = Scanner::new(&[]);
    assert_eq!(scanner.scan(b""), None);
    assert!(scanner.scan_all(b"").is_empty());
    let nothing = Scanner::known_only(&[]);
    assert_eq!(nothing.scan(b"anything at all"), None);
    let mut stream = nothing.stream();
    assert_eq!(stream.push(b"abc"), None);
    assert_eq!(stream.push(b""), None);
}

#[test]
fn max_match_len_covers_rules_and_known_forms() {
    let scanner = Scanner::new(&[]);
    assert_eq!(
        scanner.max_match_len(),
        RULES.iter().map(|r| r.max_len).max().unwrap()
    );
    let long = vec![b'/'; 200];
    let with = Scanner::new(&[secret("LONG", &long)]);
    assert_eq!(
        with.max_match_len(),
        600,
        "percent-encoding triples every byte"
    );
    assert!(rule("pypi-token").max_len <= scanner.max_match_len());
}

#[test]
fn scanner_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Scanner>();
    shareable::<StreamScan<'_>>();
    shareable::<Finding>();
    shareable::<KnownSecret>();
}

#[test]
fn upper_case_anchors_are_case_sensitive() {
    let scanner = Scanner::new(&[]);
    let mut rng = Rng::new(14);
    let lower = [b"akia".as_slice(), &rng.pick(UPPER, 16)].concat();
    assert_eq!(scanner.scan(&lower), None);
    let upper_gh = [b"GHP_".as_slice(), &rng.pick(ALNUM, 36)].concat();
    assert_eq!(scanner.scan(&upper_gh), None);
}

#[test]
fn the_start_of_a_known_value_at_the_end_is_measured_in_every_form() {
    let scanner = known_scanner();
    assert_eq!(scanner.known_prefix_at_end(b"data: hello\n\n"), 0);
    assert_eq!(scanner.known_prefix_at_end(b""), 0);
    let raw = [b"x=".as_slice(), &VALUE[..7]].concat();
    assert_eq!(scanner.known_prefix_at_end(&raw), 7);
    let hex: String = VALUE.iter().map(|b| format!("{b:02X}")).collect();
    let cut = format!("id={}", &hex[..11]);
    assert_eq!(scanner.known_prefix_at_end(cut.as_bytes()), 11);
    // The whole value is a match, not a start: the scan finds it, nothing is held for it.
    let whole = [b"x=".as_slice(), VALUE].concat();
    assert!(scanner.known_prefix_at_end(&whole) < VALUE.len());
}
