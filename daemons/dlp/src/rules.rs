//! The token formats we recognise, written from each issuer's published format.
//!
//! A rule's match always begins at one of its anchors: the scanner finds anchors with one
//! aho-corasick pass and runs the rule's regex only there, anchored, over at most `max_len`
//! bytes. Edges are checked by hand (not with `\b`) so a token glued to a longer word is
//! rejected even where the token alphabet has `-` in it, which `\b` does not see.
//!
//! An anchor must be rare enough for the automaton's prefilter: Twilio's `SK` is not (two
//! common capitals), so that key is found by the run detectors (`detect::run_finding`).

/// Which neighbouring bytes mean a candidate is part of something longer, not a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Edge {
    /// Any neighbour is fine: the format is distinctive on its own.
    Any,
    /// `[A-Za-z0-9_]`, what `\b` would look at.
    Word,
    /// `[A-Za-z0-9_-]`, for alphabets that include the dash.
    Token,
    /// `[A-Za-z0-9+/]`, for base64 bodies.
    Base64,
}

impl Edge {
    /// Whether `b` next to a candidate makes it part of a longer run.
    pub(crate) fn rejects(self, b: u8) -> bool {
        match self {
            Edge::Any => false,
            Edge::Word => b.is_ascii_alphanumeric() || b == b'_',
            Edge::Token => b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
            Edge::Base64 => b.is_ascii_alphanumeric() || b == b'+' || b == b'/',
        }
    }
}

/// One token format.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Stable id, shown in findings and logs.
    pub(crate) id: &'static str,
    /// Literal, case-sensitive prefixes; every match starts with one of them.
    pub(crate) anchors: &'static [&'static str],
    /// The whole token, anchor included; bounded quantifiers only, so `max_len` holds.
    pub(crate) pattern: &'static str,
    /// The longest match `pattern` can produce.
    pub(crate) max_len: usize,
    /// What must not touch the token on the left.
    pub(crate) before: Edge,
    /// What must not touch the token on the right; `Any` for open-ended formats, so a token
    /// longer than our bound is still caught by its first `max_len` bytes.
    pub(crate) after: Edge,
}

/// Every rule, most specific first: at one position the first rule that matches wins.
pub(crate) static RULES: &[Rule] = &[
    Rule {
        id: "github-pat",
        anchors: &["ghp_"],
        pattern: r"ghp_[A-Za-z0-9]{36}",
        max_len: 40,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "github-oauth",
        anchors: &["gho_"],
        pattern: r"gho_[A-Za-z0-9]{36}",
        max_len: 40,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "github-app-token",
        anchors: &["ghu_", "ghs_", "ghr_"],
        pattern: r"gh[usr]_[A-Za-z0-9]{36}",
        max_len: 40,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "github-fine-grained-pat",
        anchors: &["github_pat_"],
        pattern: r"github_pat_[A-Za-z0-9_]{82}",
        max_len: 93,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "aws-access-key-id",
        anchors: &["AKIA", "ASIA", "ABIA", "ACCA"],
        pattern: r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
        max_len: 20,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        // 40 base64 characters alone are any hash; only the keyword next to them makes a key.
        id: "aws-secret-access-key",
        anchors: &[
            "aws_secret_access_key",
            "AWS_SECRET_ACCESS_KEY",
            "SecretAccessKey",
            "secretAccessKey",
        ],
        pattern: r#"(?:aws_secret_access_key|AWS_SECRET_ACCESS_KEY|SecretAccessKey|secretAccessKey)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?[A-Za-z0-9/+]{40}"#,
        max_len: 21 + 1 + 4 + 1 + 4 + 1 + 40,
        before: Edge::Any,
        after: Edge::Base64,
    },
    Rule {
        id: "slack-token",
        anchors: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
        pattern: r"xox[bpars]-[0-9]{1,20}-[0-9A-Za-z-]{10,240}",
        max_len: 5 + 20 + 1 + 240,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "slack-webhook",
        anchors: &["hooks.slack.com/services/"],
        pattern: r"hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}",
        max_len: 25 + 13 + 1 + 13 + 1 + 32,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "anthropic-api-key",
        anchors: &["sk-ant-api"],
        pattern: r"sk-ant-api[0-9]{2}-[A-Za-z0-9_-]{40,200}",
        max_len: 13 + 200,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "anthropic-admin-key",
        anchors: &["sk-ant-admin"],
        pattern: r"sk-ant-admin[0-9]{2}-[A-Za-z0-9_-]{40,200}",
        max_len: 15 + 200,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        // Claude subscription logins (access and refresh): what an agent in a bottle holds.
        id: "anthropic-oauth-token",
        anchors: &["sk-ant-oat", "sk-ant-ort"],
        pattern: r"sk-ant-o(?:at|rt)[0-9]{2}-[A-Za-z0-9_-]{40,200}",
        max_len: 13 + 200,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "openai-project-key",
        anchors: &["sk-proj-"],
        pattern: r"sk-proj-[A-Za-z0-9_-]{40,250}",
        max_len: 8 + 250,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "openai-service-account-key",
        anchors: &["sk-svcacct-"],
        pattern: r"sk-svcacct-[A-Za-z0-9_-]{40,250}",
        max_len: 11 + 250,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        // After the specific `sk-` rules; its body has no `-`, so `sk-ant-…` never fits it.
        id: "openai-api-key",
        anchors: &["sk-"],
        pattern: r"sk-[A-Za-z0-9]{48}",
        max_len: 51,
        before: Edge::Word,
        after: Edge::Token,
    },
    Rule {
        id: "google-api-key",
        anchors: &["AIza"],
        pattern: r"AIza[0-9A-Za-z_-]{35}",
        max_len: 39,
        before: Edge::Word,
        after: Edge::Token,
    },
    Rule {
        id: "stripe-live-key",
        anchors: &["sk_live_", "rk_live_"],
        pattern: r"[sr]k_live_[0-9A-Za-z]{24,247}",
        max_len: 8 + 247,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "stripe-test-key",
        anchors: &["sk_test_", "rk_test_"],
        pattern: r"[sr]k_test_[0-9A-Za-z]{24,247}",
        max_len: 8 + 247,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        // Newer GitLab tokens are longer than the classic 20; the first 20+ bytes suffice.
        id: "gitlab-pat",
        anchors: &["glpat-"],
        pattern: r"glpat-[0-9A-Za-z_-]{20,128}",
        max_len: 6 + 128,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "npm-token",
        anchors: &["npm_"],
        pattern: r"npm_[A-Za-z0-9]{36}",
        max_len: 40,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        // The prefix is the base64 of the macaroon's "pypi.org" location: fixed for every token.
        id: "pypi-token",
        anchors: &["pypi-AgEIcHlwaS5vcmc"],
        pattern: r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,256}",
        max_len: 20 + 256,
        before: Edge::Word,
        after: Edge::Any,
    },
    Rule {
        id: "huggingface-token",
        anchors: &["hf_"],
        pattern: r"hf_[A-Za-z]{34}",
        max_len: 37,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "sendgrid-api-key",
        anchors: &["SG."],
        pattern: r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        max_len: 69,
        before: Edge::Word,
        after: Edge::Token,
    },
    Rule {
        // The header alone: a key body is base64 like any other, the armour line is what tells.
        id: "private-key",
        anchors: &["-----BEGIN "],
        pattern: r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        max_len: 11 + 10 + 11 + 6 + 5,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "digitalocean-token",
        anchors: &["dop_v1_", "doo_v1_", "dor_v1_"],
        pattern: r"do[por]_v1_[a-f0-9]{64}",
        max_len: 71,
        before: Edge::Word,
        after: Edge::Word,
    },
    Rule {
        id: "shopify-token",
        anchors: &["shpat_", "shpss_", "shpca_", "shppa_"],
        pattern: r"shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}",
        max_len: 38,
        before: Edge::Word,
        after: Edge::Word,
    },
    // Near-format variants: what an issuer's token looks like when it is glued to a word
    // (`xghp_…`), cut short or run long. Each has an id of its own, so a finding says the
    // token was not exactly the issuer's format; they come after the strict rules, which win
    // at the same position.
    Rule {
        id: "github-token-near",
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        pattern: r"gh[pousr]_[A-Za-z0-9]{20,60}",
        max_len: 64,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "github-fine-grained-pat-near",
        anchors: &["github_pat_"],
        pattern: r"github_pat_[A-Za-z0-9_]{30,120}",
        max_len: 131,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "aws-access-key-id-near",
        anchors: &["AKIA", "ASIA", "ABIA", "ACCA"],
        pattern: r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{12,24}",
        max_len: 28,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "anthropic-key-near",
        anchors: &["sk-ant-"],
        pattern: r"sk-ant-[a-z0-9]{2,8}-[A-Za-z0-9_-]{20,200}",
        max_len: 216,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "openai-key-near",
        anchors: &["sk-proj-", "sk-svcacct-", "sk-admin-"],
        pattern: r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,39}",
        max_len: 50,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "slack-token-near",
        anchors: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
        pattern: r"xox[bpars]-[0-9A-Za-z-]{10,240}",
        max_len: 245,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "gitlab-pat-near",
        anchors: &["glpat-"],
        pattern: r"glpat-[A-Za-z0-9_-]{12,128}",
        max_len: 134,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "stripe-key-near",
        anchors: &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
        pattern: r"[sr]k_(?:live|test)_[A-Za-z0-9]{12,247}",
        max_len: 255,
        before: Edge::Any,
        after: Edge::Any,
    },
    Rule {
        id: "npm-token-near",
        anchors: &["npm_"],
        pattern: r"npm_[A-Za-z0-9]{24,60}",
        max_len: 64,
        before: Edge::Any,
        after: Edge::Any,
    },
];
