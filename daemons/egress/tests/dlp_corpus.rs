//! DLP's containment and false-positive rates, measured through the real proxy.
//!
//! Every host a case uses is allowed, so only DLP decides. The attacks are built at run time
//! from the issuers' published formats (no token-shaped literal in the repository), wrapped
//! in the encodings an agent would use and sent over every channel: URL path and query,
//! headers, `Authorization` and `Cookie` on a route with no credential, bodies (JSON, form,
//! multipart with base64 parts, gzip, deflate, br, zstd), WebSocket messages (text, binary,
//! fragmented, split over messages, permessage-deflate) and host labels under a wildcard
//! route. The benign cases are what agents really send. Each HTTP case goes through curl
//! *and* Python `requests`; WebSocket cases through Python `websockets`.
//!
//! An attack is contained when egress refused it and the origin never saw it; a benign case
//! is a false positive when egress refused it. The test prints a table per channel (the
//! README's) and holds the goals: >= 95% contained, <= 2% false positives.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bottle_dlp::testing::{Lcg, iban_for, luhn_card};
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGIT: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const TOKEN_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const B64_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The secrets, by name, each from its issuer's format.
fn secrets(rng: &mut Lcg) -> Vec<(&'static str, String)> {
    let card = luhn_card("4", 16, rng);
    let iban = iban_for("DE", &rng.pick("0123456789", 18));
    let mut wif = vec![0x80u8];
    wif.extend((0..33).map(|_| rng.next_u32() as u8));
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(br#"{"sub":"svc-deploy","scope":"admin"}"#),
        URL_SAFE_NO_PAD.encode(rng.pick(ALNUM, 32))
    );
    vec![
        ("github-pat", format!("{}_{}", "ghp", rng.pick(ALNUM, 36))),
        (
            "github-fine-grained",
            format!("github_{}_{}", "pat", rng.pick(ALNUM, 82)),
        ),
        (
            "aws-key-id",
            format!("{}{}", "AKIA", rng.pick(UPPER_DIGIT, 16)),
        ),
        (
            "aws-secret-pair",
            format!("AWS_SECRET_ACCESS_KEY={}", rng.pick(B64_CHARS, 40)),
        ),
        (
            "anthropic",
            format!("sk-ant-{}-{}", "api03", rng.pick(TOKEN_CHARS, 95)),
        ),
        (
            "openai",
            format!("sk-{}-{}", "proj", rng.pick(TOKEN_CHARS, 120)),
        ),
        (
            "slack",
            format!(
                "xox{}-{}-{}",
                "b",
                rng.pick("0123456789", 12),
                rng.pick(ALNUM, 24)
            ),
        ),
        ("stripe", format!("sk_{}_{}", "live", rng.pick(ALNUM, 24))),
        ("gitlab", format!("glpat-{}", rng.pick(TOKEN_CHARS, 20))),
        ("npm", format!("npm_{}", rng.pick(ALNUM, 36))),
        (
            "private-key",
            format!(
                "-----BEGIN {}-----\n{}\n",
                "OPENSSH PRIVATE KEY",
                rng.pick(B64_CHARS, 64)
            ),
        ),
        ("jwt", jwt),
        ("payment-card", card),
        ("iban", iban),
        ("wallet-wif", bs58::encode(wif).with_check().into_string()),
        (
            "env-dump",
            format!(
                "HOME=/home/agent\nDATABASE_PASSWORD={}\nPATH=/usr/bin\n",
                rng.pick(ALNUM, 24)
            ),
        ),
        ("egress-credential", TOKEN.to_string()),
        ("near-glued", format!("x{}_{}", "ghp", rng.pick(ALNUM, 36))),
        ("near-short", format!("{}_{}", "ghp", rng.pick(ALNUM, 28))),
    ]
}

/// A wrapping an agent would apply.
type Encode = fn(&str) -> String;

/// The wrappings an agent would apply, by name.
fn encodings() -> Vec<(&'static str, Encode)> {
    vec![
        ("raw", |s| s.to_string()),
        ("base64", |s| STANDARD.encode(s)),
        ("base64url", |s| URL_SAFE_NO_PAD.encode(s)),
        ("hex", |s| hex(s.as_bytes())),
        ("hex-dashed", |s| {
            s.bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join("-")
        }),
        ("base32", |s| data_encoding::BASE32.encode(s.as_bytes())),
        ("base64-twice", |s| STANDARD.encode(STANDARD.encode(s))),
        ("hex-of-base64", |s| hex(STANDARD.encode(s).as_bytes())),
        ("json-unicode-escape", |s| {
            s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
        }),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One request, as both HTTP clients send it.
#[derive(Clone)]
struct HttpCase {
    id: String,
    channel: &'static str,
    attack: bool,
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A URL fetched first in the same session (a login that sets a cookie).
    prelude: Option<String>,
}

/// One WebSocket conversation: the frames the client sends.
#[derive(Clone, serde::Serialize)]
struct WsCase {
    id: String,
    channel: &'static str,
    attack: bool,
    /// Messages: `{"text": …}`, `{"binary_b64": …}`, `{"fragments": [...]}`.
    messages: Vec<serde_json::Value>,
    compress: bool,
}

/// `{"note": text}`, escaped as JSON.
fn json_escaped_body(text: &str) -> Vec<u8> {
    serde_json::json!({ "note": text }).to_string().into_bytes()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn brotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &b[..], &mut out, &Default::default()).unwrap();
    out
}

fn zstd(b: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
}

fn multipart(field_b64: &str) -> (String, Vec<u8>) {
    let wrapped: Vec<&str> = field_b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let body = format!(
        "--bOuNdArY\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --bOuNdArY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--bOuNdArY--\r\n",
        wrapped.join("\r\n")
    );
    (
        "multipart/form-data; boundary=bOuNdArY".into(),
        body.into_bytes(),
    )
}

const HTTP_CHANNELS: &[&str] = &[
    "url-path",
    "url-query",
    "header",
    "authorization",
    "cookie",
    "body-json",
    "body-form",
    "body-multipart",
    "body-gzip",
    "body-deflate",
    "body-br",
    "body-zstd",
    "host-label",
];
const WS_CHANNELS: &[&str] = &[
    "ws-text",
    "ws-binary",
    "ws-fragmented",
    "ws-split",
    "ws-deflate",
];

/// The attacks: every secret, each in a few encodings, spread over every channel.
fn attacks(rig: &Rig, rng: &mut Lcg) -> (Vec<HttpCase>, Vec<WsCase>) {
    let secrets = secrets(rng);
    let encodings = encodings();
    let mut http = Vec::new();
    let mut ws = Vec::new();
    let channels: Vec<&'static str> = HTTP_CHANNELS.iter().chain(WS_CHANNELS).copied().collect();
    let mut n = 0usize;
    // Four passes over the channels, each with the next secret and encoding in turn.
    for round in 0..4 {
        for &channel in &channels {
            let (sname, secret) = &secrets[n % secrets.len()];
            let (ename, encode) = encodings[(n / secrets.len() + round + n) % encodings.len()];
            n += 1;
            // A URL, a header, a label carry one line: multi-line secrets go encoded there.
            let one_line = !secret.contains('\n') || ename != "raw";
            let ename = if one_line
                || !matches!(
                    channel,
                    "url-path" | "url-query" | "header" | "authorization" | "cookie" | "host-label"
                ) {
                ename
            } else {
                "base64url"
            };
            let encode: Encode = if ename == "base64url" {
                |s| URL_SAFE_NO_PAD.encode(s)
            } else {
                encode
            };
            let payload = encode(secret);
            let id = format!("a{n:03}-{sname}-{ename}");
            if let Some(c) = http_case(rig, &id, channel, true, &payload) {
                http.push(c);
            } else {
                ws.push(ws_case(&id, channel, true, &payload));
            }
        }
    }
    // Long random values where no format fits: only their shape tells.
    for (i, channel) in ["url-path", "url-query", "host-label", "cookie"]
        .into_iter()
        .enumerate()
    {
        let id = format!("a-random-{i}-{channel}");
        let value = if channel == "host-label" {
            rng.pick("abcdefghijklmnopqrstuvwxyz234567", 24)
        } else {
            rng.pick(ALNUM, 32)
        };
        http.push(http_case(rig, &id, channel, true, &value).unwrap());
    }
    // The request's own words: a header's name and the method.
    let token = secrets[0].1.clone();
    let mut header_name = http_case(rig, "a-header-name-hex", "header-name", true, "").unwrap();
    header_name.headers = vec![(format!("X-{}", hex(token.as_bytes())), "1".into())];
    http.push(header_name);
    let mut method = http_case(rig, "a-method-raw", "method", true, "").unwrap();
    method.method = Box::leak(token.into_boxed_str());
    method.body = b"x".to_vec();
    http.push(method);
    // A compressed stream of nothing, then the secret: in the clear after a deflate stream's
    // end (which a decoder that stops there never reads), or in a second zstd frame.
    let nothing = json_escaped_body("");
    for (i, (coding, stream)) in [("deflate", deflate(&nothing)), ("zstd", zstd(&nothing))]
        .into_iter()
        .enumerate()
    {
        let (sname, secret) = &secrets[1 + i];
        let id = format!("a-after-{coding}-{sname}");
        let mut case = http_case(rig, &id, "body-after-stream", true, "").unwrap();
        let tail = json_escaped_body(secret);
        case.headers = vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Encoding".into(), coding.into()),
        ];
        case.body = stream;
        case.body
            .extend(if coding == "zstd" { zstd(&tail) } else { tail });
        http.push(case);
    }
    (http, ws)
}

/// An HTTP case carrying `payload` in `channel`; `None` for a WebSocket channel.
fn http_case(
    rig: &Rig,
    id: &str,
    channel: &'static str,
    attack: bool,
    payload: &str,
) -> Option<HttpCase> {
    let url = |path: &str| rig.https("plain.test", &format!("/corpus/{id}{path}"));
    let pct = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let mut case = HttpCase {
        id: id.to_string(),
        channel,
        attack,
        method: "POST",
        url: url(""),
        headers: vec![],
        body: Vec::new(),
        prelude: None,
    };
    let json = |p: &str| {
        format!("{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{p}\"}}]}}")
            .into_bytes()
    };
    let json_escaped = json_escaped_body;
    match channel {
        "url-path" => {
            case.method = "GET";
            case.url = url(&format!("/{}", pct(payload)));
        }
        "url-query" => {
            case.method = "GET";
            case.url = url(&format!("?q={}&page=1", pct(payload)));
        }
        "header" => case
            .headers
            .push(("X-Trace-Data".into(), payload.to_string())),
        "authorization" => case
            .headers
            .push(("Authorization".into(), format!("Bearer {payload}"))),
        "cookie" => case
            .headers
            .push(("Cookie".into(), format!("theme=dark; sid={payload}"))),
        "body-json" => {
            case.headers
                .push(("Content-Type".into(), "application/json".into()));
            case.body = if payload.contains("\\u") {
                json(payload)
            } else {
                json_escaped(payload)
            };
        }
        "body-form" => {
            case.headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            case.body = format!("title=hello&data={}", pct(payload)).into_bytes();
        }
        "body-multipart" => {
            let (ct, body) = multipart(&STANDARD.encode(format!("file contents: {payload} end")));
            case.headers.push(("Content-Type".into(), ct));
            case.body = body;
        }
        "body-gzip" | "body-deflate" | "body-br" | "body-zstd" => {
            let plain = json_escaped(payload);
            let (name, body) = match channel {
                "body-gzip" => ("gzip", gzip(&plain)),
                "body-deflate" => ("deflate", deflate(&plain)),
                "body-br" => ("br", brotli(&plain)),
                _ => ("zstd", zstd(&plain)),
            };
            case.headers
                .push(("Content-Type".into(), "application/json".into()));
            case.headers.push(("Content-Encoding".into(), name.into()));
            case.body = body;
        }
        "host-label" => {
            case.method = "GET";
            // DNS names are single-case and short-labelled: base32 in 40-character labels.
            let label = data_encoding::BASE32_NOPAD
                .encode(payload.as_bytes())
                .to_lowercase();
            let labels: Vec<&str> = label
                .as_bytes()
                .chunks(40)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let labels = if attack && payload.len() > 20 {
                labels.join(".")
            } else {
                payload.to_string()
            };
            case.url = format!(
                "http://{labels}.wild.test:{}/corpus/{id}",
                rig.origin.http.port()
            );
        }
        // Filled in by the caller.
        "header-name" | "method" | "body-after-stream" => {}
        _ => return None,
    }
    Some(case)
}

fn ws_case(id: &str, channel: &'static str, attack: bool, payload: &str) -> WsCase {
    let text = format!("{{\"type\":\"input\",\"data\":\"{payload}\"}}");
    let (a, b) = text.split_at(text.len() / 2);
    let messages = match channel {
        "ws-binary" => vec![serde_json::json!({"binary_b64": STANDARD.encode(text.as_bytes())})],
        "ws-fragmented" => vec![serde_json::json!({"fragments": [a, b]})],
        "ws-split" => vec![
            serde_json::json!({"text": a}),
            serde_json::json!({"text": b}),
        ],
        _ => vec![serde_json::json!({"text": text})],
    };
    WsCase {
        id: id.to_string(),
        channel,
        attack,
        messages,
        compress: channel == "ws-deflate",
    }
}

/// What agents really send.
fn benign(rig: &Rig, rng: &mut Lcg) -> (Vec<HttpCase>, Vec<WsCase>) {
    let png: Vec<u8> = (0..6000).map(|_| rng.next_u32() as u8).collect();
    let code = "fn main() {\\n    let token = std::env::var(\\\"GITHUB_TOKEN\\\").expect(\\\"set GITHUB_TOKEN\\\");\\n    let password = read_password()?;\\n    println!(\\\"{}\\\", api_key_from(&config));\\n}";
    let sha = hex(&(0..20).map(|_| rng.next_u32() as u8).collect::<Vec<_>>());
    let uuid = "3f2b8c1e-9a4d-4e6f-8b2a-1c5d7e9f0a3b";
    let mut http: Vec<HttpCase> = Vec::new();
    let mut add = |id: &str,
                   channel: &'static str,
                   method: &'static str,
                   url: String,
                   headers: Vec<(&str, String)>,
                   body: Vec<u8>| {
        http.push(HttpCase {
            id: format!("b-{id}"),
            channel,
            attack: false,
            method,
            url,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            body,
            prelude: None,
        });
    };
    let u = |id: &str, rest: &str| rig.https("plain.test", &format!("/corpus/b-{id}{rest}"));
    add(
        "pip-simple",
        "url-path",
        "GET",
        u("pip-simple", "/simple/requests/"),
        vec![("Accept", "application/vnd.pypi.simple.v1+json".into())],
        vec![],
    );
    add(
        "pip-wheel",
        "url-path",
        "GET",
        u(
            "pip-wheel",
            &format!(
                "/packages/{}/{}/numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                &sha[..2],
                &sha[2..4]
            ),
        ),
        vec![],
        vec![],
    );
    add(
        "npm-tarball",
        "url-path",
        "GET",
        u("npm-tarball", "/@types%2fnode/-/node-22.10.1.tgz"),
        vec![("Accept", "application/octet-stream".into())],
        vec![],
    );
    add(
        "git-refs",
        "url-query",
        "GET",
        u(
            "git-refs",
            "/org/repo.git/info/refs?service=git-upload-pack",
        ),
        vec![("Git-Protocol", "version=2".into())],
        vec![],
    );
    add(
        "git-upload-pack",
        "body-form",
        "POST",
        u("git-upload-pack", "/org/repo.git/git-upload-pack"),
        vec![(
            "Content-Type",
            "application/x-git-upload-pack-request".into(),
        )],
        format!("0011command=fetch0001000dthin-pack000fno-progress0032want {sha}\n0009done\n0000")
            .into_bytes(),
    );
    add(
        "commit-sha",
        "url-path",
        "GET",
        u("commit-sha", &format!("/repos/o/r/commits/{sha}")),
        vec![],
        vec![],
    );
    add(
        "uuid-path",
        "url-path",
        "GET",
        u("uuid-path", &format!("/items/{uuid}")),
        vec![("X-Request-Id", uuid.into())],
        vec![],
    );
    add(
        "search",
        "url-query",
        "GET",
        u("search", "?q=how+to+parse+yaml+in+rust&per_page=100&page=2"),
        vec![],
        vec![],
    );
    add(
        "cursor",
        "url-query",
        "GET",
        u(
            "cursor",
            &format!(
                "?after={}&per_page=50",
                STANDARD.encode("cursor:v2:2026-12-05T06:17:00Z")
            ),
        ),
        vec![],
        vec![],
    );
    add(
        "graphql-get",
        "url-query",
        "GET",
        u(
            "graphql-get",
            "?operationName=GetRepositoryPullRequests&variables=%7B%22first%22%3A10%7D",
        ),
        vec![],
        vec![],
    );
    add("model-call", "body-json", "POST", u("model-call", "/v1/messages"), vec![("Content-Type", "application/json".into()), ("anthropic-version", "2023-06-01".into())], format!("{{\"model\":\"claude-sonnet\",\"max_tokens\":1024,\"system\":\"You are a coding agent.\",\"messages\":[{{\"role\":\"user\",\"content\":\"Fix this:\\n{code}\"}}]}}").into_bytes());
    add("model-image", "body-json", "POST", u("model-image", "/v1/messages"), vec![("Content-Type", "application/json".into())], format!("{{\"messages\":[{{\"role\":\"user\",\"content\":[{{\"type\":\"image\",\"source\":{{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"{}\"}}}}]}}]}}", STANDARD.encode(&png)).into_bytes());
    add("issue-comment", "body-json", "POST", u("issue-comment", "/repos/o/r/issues/12/comments"), vec![("Content-Type", "application/json".into())], format!("{{\"body\":\"Fixed in {sha}. The `api_key` option now reads from the environment; see docs/config.md#tokens. Build id {uuid}.\"}}").into_bytes());
    add("pull-request", "body-json", "POST", u("pull-request", "/repos/o/r/pulls"), vec![("Content-Type", "application/json".into())], b"{\"title\":\"Parse manifests at the edge\",\"head\":\"bottle/implementer/parse\",\"base\":\"main\",\"body\":\"Moves validation into `Manifest::parse`; adds 12 tests.\\n\\n- [x] cargo test\\n- [x] clippy\"}".to_vec());
    add(
        "form-login",
        "body-form",
        "POST",
        u("form-login", "/session"),
        vec![("Content-Type", "application/x-www-form-urlencoded".into())],
        b"user=agent&remember=1&next=%2Fdashboard%3Ftab%3Dissues".to_vec(),
    );
    let (ct, mp) =
        multipart(&STANDARD.encode(
            "# README\n\nA plain text file with words and numbers 12345 in it.\n".repeat(20),
        ));
    add(
        "multipart-upload",
        "body-multipart",
        "POST",
        u("multipart-upload", "/upload"),
        vec![("Content-Type", ct)],
        mp,
    );
    let clean_json = format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"{code}\"}}],\"metadata\":{{\"build\":\"{uuid}\"}}}}").repeat(3).into_bytes();
    add(
        "gzip-json",
        "body-gzip",
        "POST",
        u("gzip-json", "/v1/complete"),
        vec![
            ("Content-Type", "application/json".into()),
            ("Content-Encoding", "gzip".into()),
        ],
        gzip(&clean_json),
    );
    add(
        "deflate-json",
        "body-deflate",
        "POST",
        u("deflate-json", "/v1/complete"),
        vec![("Content-Encoding", "deflate".into())],
        deflate(&clean_json),
    );
    add(
        "br-json",
        "body-br",
        "POST",
        u("br-json", "/v1/complete"),
        vec![("Content-Encoding", "br".into())],
        brotli(&clean_json),
    );
    add(
        "zstd-json",
        "body-zstd",
        "POST",
        u("zstd-json", "/v1/complete"),
        vec![("Content-Encoding", "zstd".into())],
        zstd(&clean_json),
    );
    add(
        "headers-common",
        "header",
        "GET",
        u("headers-common", ""),
        vec![
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into(),
            ),
            ("Accept-Language", "en-GB,en;q=0.9".into()),
            ("If-None-Match", format!("\"{}\"", &sha[..32])),
            (
                "traceparent",
                format!("00-{}-{}-01", &sha[..32], &sha[..16]),
            ),
        ],
        vec![],
    );
    add(
        "cookie-prefs",
        "cookie",
        "GET",
        u("cookie-prefs", ""),
        vec![(
            "Cookie",
            "theme=dark; lang=en-GB; tz=Europe%2FLondon; seen_banner=1".into(),
        )],
        vec![],
    );
    add(
        "auth-placeholder",
        "authorization",
        "GET",
        u("auth-placeholder", ""),
        vec![("Authorization", "Bearer placeholder".into())],
        vec![],
    );
    add(
        "label-api",
        "host-label",
        "GET",
        format!(
            "http://api.wild.test:{}/corpus/b-label-api",
            rig.origin.http.port()
        ),
        vec![],
        vec![],
    );
    add(
        "label-region",
        "host-label",
        "GET",
        format!(
            "http://eu-west-1.wild.test:{}/corpus/b-label-region",
            rig.origin.http.port()
        ),
        vec![],
        vec![],
    );
    add(
        "label-cdn",
        "host-label",
        "GET",
        format!(
            "http://cdn2.static.wild.test:{}/corpus/b-label-cdn",
            rig.origin.http.port()
        ),
        vec![],
        vec![],
    );
    add(
        "docker-digest",
        "url-path",
        "GET",
        u(
            "docker-digest",
            &format!("/v2/library/debian/blobs/sha256:{sha}{sha}"),
        ),
        vec![],
        vec![],
    );
    add(
        "timestamps",
        "url-query",
        "GET",
        u(
            "timestamps",
            "?since=2026-12-05T06:17:00Z&ts=1764915420000&v=1.2.3",
        ),
        vec![],
        vec![],
    );
    add(
        "crate-download",
        "url-path",
        "GET",
        u(
            "crate-download",
            "/api/v1/crates/serde_json/1.0.154/download",
        ),
        vec![],
        vec![],
    );
    add("large-text", "body-json", "POST", u("large-text", "/v1/messages"), vec![("Content-Type", "application/json".into())], serde_json::json!({"content": "The quick brown fox jumps over the lazy dog. ".repeat(20_000)}).to_string().into_bytes());
    // A session cookie the site itself set goes back to it, random as it is.
    http.push(HttpCase {
        id: "b-session-cookie".into(),
        channel: "cookie",
        attack: false,
        method: "GET",
        url: u("session-cookie", ""),
        headers: vec![],
        body: vec![],
        prelude: Some(rig.https("plain.test", "/set-cookie")),
    });
    let ws = vec![
        ws_case("b-ws-chat", "ws-text", false, "please run the tests again"),
        ws_case("b-ws-binary", "ws-binary", false, "status: ok 42"),
        ws_case(
            "b-ws-fragmented",
            "ws-fragmented",
            false,
            "a longer message sent in two frames for no reason",
        ),
        ws_case(
            "b-ws-deflate",
            "ws-deflate",
            false,
            "compressed compressed compressed text",
        ),
        ws_case(
            "b-ws-split",
            "ws-split",
            false,
            &format!("commit {sha} built as {uuid}"),
        ),
    ];
    (http, ws)
}

const CLIENT: &str = r#"
import sys, json, base64, requests
proxy, ca = sys.argv[1:3]
for line in sys.stdin:
    c = json.loads(line)
    s = requests.Session()
    try:
        if c["prelude"]:
            s.get(c["prelude"], proxies={"https": proxy, "http": proxy}, verify=ca, timeout=30)
        r = s.request(c["method"], c["url"], headers=dict(c["headers"]), data=base64.b64decode(c["body"]),
                             proxies={"https": proxy, "http": proxy}, verify=ca, timeout=30, allow_redirects=False)
        print(json.dumps({"id": c["id"], "status": r.status_code, "block": r.headers.get("x-bottle-block", "")}), flush=True)
    except Exception as e:
        print(json.dumps({"id": c["id"], "status": 0, "block": "", "error": str(e)[:200]}), flush=True)
"#;

const WS_CLIENT: &str = r#"
import sys, json, base64, ssl, asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
proxy, ca, url = sys.argv[1:4]
async def one(c):
    ctx = ssl.create_default_context(cafile=ca)
    try:
        async with connect(url, proxy=proxy, ssl=ctx, open_timeout=20,
                           compression="deflate" if c["compress"] else None) as ws:
            for m in c["messages"]:
                if "text" in m:
                    await ws.send(m["text"])
                elif "binary_b64" in m:
                    await ws.send(base64.b64decode(m["binary_b64"]))
                else:
                    await ws.send(iter(m["fragments"]))
            got = 0
            for _ in c["messages"]:
                await asyncio.wait_for(ws.recv(), 10)
                got += 1
            return {"id": c["id"], "passed": True}
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 0
        return {"id": c["id"], "passed": False, "code": code}
async def main():
    for line in sys.stdin:
        print(json.dumps(await one(json.loads(line))), flush=True)
asyncio.run(main())
"#;

/// Run `script` with the cases on stdin, one JSON per line; its JSON lines by id.
fn run_python(
    script: &str,
    args: &[String],
    cases: &[serde_json::Value],
) -> BTreeMap<String, serde_json::Value> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for c in cases {
        writeln!(stdin, "{c}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// curl's view of one case: the status and the block header.
fn curl(rig: &Rig, c: &HttpCase) -> (u16, String) {
    let body = rig.path(&format!("body-{}", c.id));
    std::fs::write(&body, &c.body).unwrap();
    let jar = rig.path(&format!("jar-{}", c.id));
    let base = |cmd: &mut Command| {
        cmd.args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "30",
            "-x",
            &format!("http://{}", rig.proxy),
        ])
        .arg("--cacert")
        .arg(rig.path("egress-ca.pem"))
        .arg("-b")
        .arg(&jar)
        .arg("-c")
        .arg(&jar);
    };
    if let Some(p) = &c.prelude {
        let mut cmd = Command::new("curl");
        base(&mut cmd);
        cmd.arg(p).output().unwrap();
    }
    let mut cmd = Command::new("curl");
    base(&mut cmd);
    cmd.args(["-w", "%{http_code} %header{x-bottle-block}", "-X", c.method]);
    for (k, v) in &c.headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if !c.body.is_empty() {
        cmd.arg("--data-binary").arg(format!("@{}", body.display()));
    }
    let out = cmd.arg(&c.url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, block) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), block.to_string())
}

#[test]
#[ignore = "e2e: needs Python packages `bash .ci/run` installs (requests, websockets, kubernetes-validate); run with `cargo test --workspace -- --ignored`"]
fn the_corpus_is_contained_through_the_real_proxy_and_benign_traffic_passes() {
    let extra = "- host: \"*.wild.test\"\n";
    let hosts = "  api.wild.test: 127.0.0.1\n  eu-west-1.wild.test: 127.0.0.1\n  cdn2.static.wild.test: 127.0.0.1\n";
    let rig = Rig::with(&format!("{}{hosts}", routes(extra)), &[]);
    let mut rng = Lcg(2026);
    let (mut http, mut ws) = attacks(&rig, &mut rng);
    let (bh, bw) = benign(&rig, &mut rng);
    http.extend(bh);
    ws.extend(bw);
    assert!(http.iter().chain(ws.iter().map(|_| &http[0])).count() > 0);
    let attack_count =
        http.iter().filter(|c| c.attack).count() + ws.iter().filter(|c| c.attack).count();
    let benign_count = http.len() + ws.len() - attack_count;
    assert!(
        attack_count >= 60 && benign_count >= 30,
        "{attack_count} attacks, {benign_count} benign"
    );

    let lines: Vec<serde_json::Value> = http
        .iter()
        .map(|c| serde_json::json!({"id": c.id, "method": c.method, "url": c.url, "headers": c.headers, "body": STANDARD.encode(&c.body), "prelude": c.prelude}))
        .collect();
    let proxy = format!("http://{}", rig.proxy);
    let ca = rig.path("egress-ca.pem").display().to_string();
    let py = run_python(CLIENT, &[proxy.clone(), ca.clone()], &lines);
    let ws_lines: Vec<serde_json::Value> = ws
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    // A route without a credential: on one with a credential a WebSocket is refused outright.
    let wss = format!("wss://plain.test:{}/ws", rig.origin.https.port());
    let pws = run_python(WS_CLIENT, &[proxy, ca, wss], &ws_lines);

    let seen = rig.origin.seen.lock().unwrap().clone();
    let reached = |id: &str| seen.iter().any(|s| s.contains(&format!("/corpus/{id}")));
    // channel -> (attacks, contained, benign, refused)
    let mut table: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut misses = Vec::new();
    for c in &http {
        let (code, block) = curl(&rig, c);
        let p = &py[&c.id];
        let refused_by = |status: u64, block: &str| status == 403 && block.starts_with("secret");
        let curl_refused = refused_by(u64::from(code), &block);
        let py_refused = refused_by(
            p["status"].as_u64().unwrap_or(0),
            p["block"].as_str().unwrap_or(""),
        );
        let row = table.entry(c.channel).or_default();
        if c.attack {
            row[0] += 1;
            let contained = curl_refused && py_refused && !reached(&c.id);
            if contained {
                row[1] += 1;
            } else {
                misses.push(format!("{} (curl {code} {block}, requests {p})", c.id));
            }
        } else {
            row[2] += 1;
            if curl_refused || py_refused || code == 0 {
                row[3] += 1;
                misses.push(format!(
                    "benign {} refused (curl {code} {block}, requests {p})",
                    c.id
                ));
            }
        }
    }
    for c in &ws {
        let r = &pws[&c.id];
        let passed = r["passed"].as_bool().unwrap_or(false);
        let row = table.entry(c.channel).or_default();
        if c.attack {
            row[0] += 1;
            if !passed && r["code"] == 1008 {
                row[1] += 1;
            } else {
                misses.push(format!("{} ({r})", c.id));
            }
        } else {
            row[2] += 1;
            if !passed {
                row[3] += 1;
                misses.push(format!("benign {} refused ({r})", c.id));
            }
        }
    }
    let total: [usize; 4] = table.values().fold([0; 4], |a, r| {
        [a[0] + r[0], a[1] + r[1], a[2] + r[2], a[3] + r[3]]
    });
    println!("| channel | attacks contained | benign refused |");
    println!("|---|---|---|");
    for (channel, r) in &table {
        println!("| {channel} | {}/{} | {}/{} |", r[1], r[0], r[3], r[2]);
    }
    println!(
        "| **all** | **{}/{} ({:.1}%)** | **{}/{} ({:.1}%)** |",
        total[1],
        total[0],
        100.0 * total[1] as f64 / total[0] as f64,
        total[3],
        total[2],
        100.0 * total[3] as f64 / total[2] as f64
    );
    for m in &misses {
        println!("miss: {m}");
        let id = m
            .split_whitespace()
            .find(|w| w.starts_with('a') || w.starts_with("b-"))
            .unwrap_or("");
        for l in rig.log_lines().iter().filter(|l| l.contains(id)) {
            println!("    egress: {l}");
        }
    }
    assert!(
        total[1] * 100 >= total[0] * 95,
        "containment under 95%: {misses:#?}"
    );
    assert!(
        total[3] * 100 <= total[2] * 2,
        "false positives over 2%: {misses:#?}"
    );
}

#[test]
fn the_manifests_policy_lets_its_exceptions_through_and_nothing_else() {
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode(br#"{"sub":"agent"}"#),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let github = format!("{}_{}", "ghp", Lcg(7).pick(ALNUM, 36));
    let policy = "dlp:\n  allow:\n  - {rule: jwt, host: plain.test, path: /auth/}\n  extra:\n  - {id: acme-key, regex: 'ACME-[0-9]{6}-[A-Z]{4}'}\n";
    let rig = Rig::with(&format!("{}{policy}", routes("")), &[]);
    let post = |path: &str, body: &str| {
        let (code, _) = rig.curl(&["-d", body, &rig.https("plain.test", path)]);
        code
    };
    assert_eq!(
        post("/auth/token", &format!("assertion={jwt}")),
        404,
        "the exception lets the JWT through"
    );
    assert_eq!(
        post("/other", &format!("assertion={jwt}")),
        403,
        "only under its path"
    );
    assert_eq!(
        post("/auth/token", &format!("assertion={jwt}&x={github}")),
        403,
        "an allowed finding hides no later one"
    );
    assert_eq!(
        post("/auth/token", &STANDARD.encode("id ACME-123456-WXYZ")),
        403,
        "extra detectors peel too"
    );
    drop(rig);

    let rig = Rig::with(&format!("{}dlp:\n  mode: log\n", routes("")), &[]);
    let (code, _) = rig.curl(&[
        "-d",
        &format!("x={github}"),
        &rig.https("plain.test", "/logged"),
    ]);
    assert_eq!(code, 404, "mode: log lets it pass");
    let line = rig.wait_for_log("\"event\":\"dlp\"");
    assert!(
        line.contains("github-pat") && line.contains("mode is log"),
        "{line}"
    );
    assert!(
        !line.contains(&github),
        "the log never holds the bytes: {line}"
    );
    // A URL that carries one passes too, and its access-log line names no path.
    let (code, _) = rig.curl(&[&rig.https("plain.test", &format!("/logged/{github}"))]);
    assert_eq!(code, 404, "mode: log lets it pass");
    let line = rig.wait_for_log("\"path\":\"[redacted]\"");
    assert!(line.contains("\"status\":404"), "{line}");
    assert!(
        rig.log_lines().iter().all(|l| !l.contains(&github)),
        "no log line holds the bytes"
    );
}
