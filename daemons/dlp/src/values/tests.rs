use super::*;
use base64::Engine;

fn scanner() -> Scanner {
    Scanner::new(&[])
}

const RANDOM: &str = "q8Zt3vKp9LmX2wRb7YcN4sJd";

#[test]
fn random_path_segments_and_query_values_are_refused_ids_and_words_pass() {
    let s = scanner();
    for url in [
        format!("/upload/{RANDOM}"),
        format!("/search?q={RANDOM}&x=1"),
        format!("/a?api_key={RANDOM}"),
    ] {
        assert!(s.inspect_url(&url).is_some(), "{url}");
    }
    for url in [
        "/repos/o/r/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "/repos/o/r/issues?state=open&per_page=100&page=2",
        "/packages/ab/cd/numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "/v1/messages?beta=true",
        "/graphql?operationName=GetRepositoryPullRequests",
        "/items/123e4567-e89b-12d3-a456-426614174000",
        "/repos/o/r/issues?after=Y3Vyc29yOnYyOpK5MjAyNi0xMi0wNVQwNjoxNzowMCswMDowMM4AAAAB",
    ] {
        assert_eq!(s.inspect_url(url), None, "{url}");
    }
}

#[test]
fn headers_the_agent_sets_are_judged_unless_egress_replaces_them() {
    let s = scanner();
    assert_eq!(
        s.inspect_header(
            "authorization",
            format!("Bearer {RANDOM}").as_bytes(),
            false
        )
        .map(|f| f.rule),
        Some("bearer-token".into())
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{RANDOM}"));
    assert_eq!(
        s.inspect_header("Authorization", format!("Basic {basic}").as_bytes(), false)
            .map(|f| f.rule),
        Some("bearer-token".into())
    );
    assert_eq!(
        s.inspect_header("authorization", format!("Bearer {RANDOM}").as_bytes(), true),
        None
    );
    assert_eq!(
        s.inspect_header(
            "cookie",
            format!("theme=dark; sid={RANDOM}").as_bytes(),
            false
        )
        .map(|f| f.rule),
        Some("cookie-value".into())
    );
    assert_eq!(
        s.inspect_header("x-api-key", RANDOM.as_bytes(), false)
            .map(|f| f.rule),
        Some("secret-header".into())
    );
    for (name, value) in [
        ("cookie", "theme=dark; lang=en"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/vnd.github+json"),
        ("x-request-id", "123e4567-e89b-12d3-a456-426614174000"),
    ] {
        assert_eq!(
            s.inspect_header(name, value.as_bytes(), false),
            None,
            "{name}"
        );
    }
}

#[test]
fn host_labels_are_judged_alone_and_joined() {
    let s = scanner();
    assert!(s.inspect_labels("mzxw6ytboi3dmn2q7k4l").is_some());
    let secret = data_encoding::BASE32_NOPAD
        .encode(format!("{}_{}", "ghp", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789").as_bytes())
        .to_lowercase();
    let (a, b) = secret.split_at(secret.len() / 2);
    assert!(s.inspect_labels(&format!("{a}.{b}")).is_some());
    for ok in ["api", "eu-west-1", "www", "cdn2"] {
        assert_eq!(s.inspect_labels(ok), None, "{ok}");
    }
}
