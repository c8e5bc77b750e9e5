//! Every value is built at run time (checksums computed here), never written as a literal.

use super::*;

use crate::testing::{Lcg, base58check, iban_for};

fn luhn_card(prefix: &str, len: usize) -> String {
    crate::testing::luhn_card(prefix, len, &mut Lcg(7))
}

#[test]
fn cards_pass_luhn_with_an_issuer_prefix_alone_or_grouped() {
    for (prefix, len) in [
        ("4", 16),
        ("51", 16),
        ("2221", 16),
        ("34", 15),
        ("6011", 16),
        ("4", 19),
    ] {
        let card = luhn_card(prefix, len);
        let hay = format!("pay with {card} today");
        assert_eq!(
            validated(hay.as_bytes()).map(|f| f.rule),
            Some("payment-card".into()),
            "{card}"
        );
        let grouped: Vec<&str> = (0..card.len())
            .step_by(4)
            .map(|i| &card[i..(i + 4).min(card.len())])
            .collect();
        for sep in [" ", "-"] {
            let hay = format!("card: {}.", grouped.join(sep));
            assert_eq!(
                validated(hay.as_bytes()).map(|f| f.rule),
                Some("payment-card".into()),
                "{hay}"
            );
        }
    }
    // One digit off breaks the sum; an unknown prefix or a timestamp is no card.
    let mut bad = luhn_card("4", 16).into_bytes();
    bad[5] = if bad[5] == b'9' { b'0' } else { bad[5] + 1 };
    assert_eq!(validated(&bad), None);
    assert_eq!(validated(luhn_card("9", 16).as_bytes()), None);
    assert_eq!(validated(b"ts=1733380000000 id=1234567890123"), None);
    // Published test numbers pass Luhn but are in every fixture.
    for test_card in ["4111111111111111", "4242424242424242", "5555555555554444"] {
        assert!(!card(test_card.as_bytes()), "{test_card}");
    }
}

#[test]
fn ibans_pass_mod_97_with_the_countrys_length() {
    let de = iban_for("DE", "370400440532013000");
    let gb = iban_for("GB", "NWBK60161331926819");
    for iban in [&de, &gb] {
        assert_eq!(
            validated(format!("to {iban}").as_bytes()).map(|f| f.rule),
            Some("iban".into())
        );
        let spaced: Vec<&str> = (0..iban.len())
            .step_by(4)
            .map(|i| &iban[i..(i + 4).min(iban.len())])
            .collect();
        assert_eq!(
            validated(spaced.join(" ").as_bytes()).map(|f| f.rule),
            Some("iban".into()),
            "{}",
            spaced.join(" ")
        );
    }
    let mut wrong = de.clone().into_bytes();
    wrong[3] = if wrong[3] == b'9' { b'0' } else { wrong[3] + 1 };
    assert_eq!(validated(&wrong), None);
    // Right checksum, wrong length for the country.
    assert_eq!(
        validated(iban_for("DE", "3704004405320130001").as_bytes()),
        None
    );
}

#[test]
fn jwts_need_a_json_header_with_an_algorithm() {
    use base64::Engine;
    let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.{}",
        b(br#"{"alg":"HS256","typ":"JWT"}"#),
        b(br#"{"sub":"agent","iat":1}"#),
        b(&[7u8; 32])
    );
    let hay = format!("Authorization: Bearer {jwt}\n");
    let f = validated(hay.as_bytes()).unwrap();
    assert_eq!(
        (f.rule.as_str(), &hay[f.start..f.end]),
        ("jwt", jwt.as_str())
    );
    let not = format!(
        "{}.{}.{}",
        b(br#"{"name":"x","kind":"y"}"#),
        b(b"payload-part"),
        b(&[7u8; 32])
    );
    assert_eq!(validated(not.as_bytes()), None);
}

#[test]
fn wallet_keys_and_addresses_need_their_checksums() {
    let wif = base58check(0x80, &[0x11; 33]);
    let p2pkh = base58check(0x00, &[0x22; 20]);
    let p2sh = base58check(0x05, &[0x33; 20]);
    assert_eq!(
        validated(format!("key {wif}").as_bytes()).map(|f| f.rule),
        Some("wallet-private-key".into())
    );
    assert_eq!(
        validated(format!("to {p2pkh}").as_bytes()).map(|f| f.rule),
        Some("bitcoin-address".into())
    );
    assert_eq!(
        validated(format!("to {p2sh}").as_bytes()).map(|f| f.rule),
        Some("bitcoin-address".into())
    );
    let mut broken = p2pkh.clone().into_bytes();
    let last = broken.len() - 1;
    broken[last] = if broken[last] == b'2' { b'3' } else { b'2' };
    assert_eq!(validated(&broken), None);
    let segwit =
        bech32::segwit::encode(bech32::hrp::BC, bech32::segwit::VERSION_0, &[0x44; 20]).unwrap();
    assert_eq!(
        validated(format!("to {segwit}").as_bytes()).map(|f| f.rule),
        Some("bitcoin-address".into())
    );
    // EIP-55: the case of each letter from the address's Keccak hash.
    let lower = "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
    use sha3::{Digest, Keccak256};
    let hash = Keccak256::digest(lower.as_bytes());
    let checksummed: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    assert_eq!(
        validated(format!("send to 0x{checksummed}").as_bytes()).map(|f| f.rule),
        Some("ethereum-address".into())
    );
    // A lower-case one is any 40-hex id (a git object id with 0x before it).
    assert_eq!(validated(format!("0x{lower}").as_bytes()), None);
}

#[test]
fn secret_named_assignments_with_real_values_are_found() {
    let value = "q8Zt3vKp9LmX2wRb7YcN4sJd";
    for hay in [
        format!("AWS_SECRET_ACCESS_KEY={value}\n"),
        format!("export DB_PASSWORD='{value}'"),
        format!(r#"{{"client_secret": "{value}"}}"#),
        format!("api-key: {value}"),
        format!("GITLAB_TOKEN = {value}"),
    ] {
        assert_eq!(
            validated(hay.as_bytes()).map(|f| f.rule),
            Some("secret-assignment".into()),
            "{hay}"
        );
    }
    for hay in [
        "GITHUB_TOKEN=${GITHUB_TOKEN}",
        "password: <your-password-here>",
        r#"{"max_tokens": 1024, "next_page_token": "CiAKGjBpNDd2Nmp5ZDIxMjM0"}"#,
        "token = process.env.GITHUB_TOKEN_FOR_CI",
        "SECRET_KEY=changeme-changeme-123",
        "author: Jane Doe <jane@example.com>",
        "PASSWORD=hunter2",
    ] {
        assert_eq!(validated(hay.as_bytes()), None, "{hay}");
    }
}

#[test]
fn random_values_are_told_from_digests_ids_and_words() {
    assert!(looks_random(b"q8Zt3vKp9LmX2wRb7YcN4sJd", 20, 3.6));
    assert!(looks_random(b"mzxw6ytboi3dmn2q7k4l", 16, 3.3));
    for not in [
        &b"da39a3ee5e6b4b0d3255bfef95601890afd80709"[..],
        b"123e4567-e89b-12d3-a456-426614174000",
        b"GetRepositoryPullRequests",
        b"manylinux2014",
        b"aaaaaaaaaaaaaaaaaaaaaaaa1",
    ] {
        assert!(
            !looks_random(not, 20, 3.6),
            "{}",
            String::from_utf8_lossy(not)
        );
    }
}

#[test]
fn twilio_keys_are_found_in_runs_and_near_misses_are_not() {
    let hex = Lcg(3).pick("0123456789abcdef", 32);
    let key = format!("S{}{hex}", "K");
    for hay in [
        format!("key: {key}\n"),
        format!("TWILIO={key}"),
        format!("\"{key}\""),
    ] {
        let f = validated(hay.as_bytes()).unwrap();
        assert_eq!(
            (f.rule.as_str(), &hay[f.start..f.end]),
            ("twilio-api-key", key.as_str())
        );
    }
    for miss in [
        format!("TASK{hex}"),
        format!("{key}a"),
        format!("S{}{}", "K", hex.to_uppercase()),
        format!("S{}{}", "K", &hex[1..]),
    ] {
        assert_eq!(validated(miss.as_bytes()), None, "{miss}");
    }
}

#[test]
fn every_secret_key_word_holds_a_stem_the_quick_check_looks_for() {
    // The quick check compares, where a key has a stem's first letter, that one stem only.
    let mut firsts: Vec<u8> = super::SECRET_STEMS.iter().map(|s| s[0]).collect();
    firsts.sort_unstable();
    firsts.dedup();
    assert_eq!(
        firsts.len(),
        super::SECRET_STEMS.len(),
        "two stems share a first letter"
    );
    for word in super::SECRET_KEYS {
        assert!(
            super::SECRET_STEMS
                .iter()
                .any(|stem| word.windows(stem.len()).any(|w| w == *stem)),
            "{}",
            String::from_utf8_lossy(word)
        );
        assert!(super::has_secret_stem(word));
        assert!(super::has_secret_stem(&word.to_ascii_lowercase()));
    }
    for key in [
        &b"CONTENT"[..],
        b"parser.rs",
        b"Config",
        b"ke",
        b"tok",
        b"pas",
    ] {
        assert!(
            !super::has_secret_stem(key),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    // Any case, and `-` or `.` where the names have `_`.
    for key in [
        "apiKey",
        "Api-Key",
        "client.secret",
        "x-auth-token",
        "DB_Password",
    ] {
        assert!(super::secret_name(key.as_bytes()), "{key}");
    }
}

#[test]
fn a_key_is_secret_named_exactly_when_the_word_lists_say_so() {
    let by_lists = |key: &str| {
        let upper = key.to_ascii_uppercase().replace(['-', '.'], "_");
        let any = |list: &[&[u8]]| {
            list.iter()
                .any(|w| upper.as_bytes().windows(w.len()).any(|x| x == *w))
        };
        (5..=64).contains(&key.len()) && any(super::SECRET_KEYS) && !any(super::TRAVELLING_KEYS)
    };
    let parts = [
        "key",
        "Token",
        "SECRET",
        "pass",
        "word",
        "credential",
        "api",
        "_",
        "-",
        ".",
        "page",
        "csrf",
        "s",
        "type",
        "x",
        "auth",
        "sync",
        "count",
        "private",
        "access",
    ];
    let mut rng = Lcg(5);
    let mut named = 0;
    for _ in 0..20_000 {
        let mut key = String::new();
        for _ in 0..1 + rng.next_u32() % 5 {
            key.push_str(parts[rng.next_u32() as usize % parts.len()]);
        }
        let want = by_lists(&key);
        named += usize::from(want);
        assert_eq!(super::secret_name(key.as_bytes()), want, "{key}");
    }
    assert!((2_000..18_000).contains(&named), "{named} of 20000 named");
}
