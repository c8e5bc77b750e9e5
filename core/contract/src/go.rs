//! The agent's go-ahead: what the host writes into the FIFO its container's process waits on
//! (`bottle-init agent`), and how that process reads it. The message is the env the agent's
//! command gets on top of its container's (`K=V` entries, each ended by a NUL), then one more
//! NUL as the end mark: a writer that stops early (the host gave up) is no go-ahead.

/// `env` as the go-ahead message.
pub fn encode(env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in env {
        // Env names and values never hold these (the kernel's env cannot carry a NUL).
        debug_assert!(!k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

/// The env a go-ahead `message` carries; `None` for a message without its end mark (cut
/// short, or nothing at all) or one whose entries are not `K=V` in UTF-8.
pub fn decode(message: &[u8]) -> Option<Vec<(String, String)>> {
    let body = message.strip_suffix(b"\0")?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    body.strip_suffix(b"\0")?
        .split(|b| *b == 0)
        .map(|entry| {
            let entry = std::str::from_utf8(entry).ok()?;
            let (k, v) = entry.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn the_message_carries_entries_and_values_with_equals_signs() {
        let env = vec![
            (
                "HTTPS_PROXY".to_owned(),
                "http://h:t@egress:9099".to_owned(),
            ),
            ("A".to_owned(), "b=c".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ];
        assert_eq!(decode(&encode(&env)), Some(env));
        assert_eq!(decode(&encode(&[])), Some(Vec::new()));
    }

    #[test]
    fn a_message_cut_short_or_malformed_is_no_go_ahead() {
        assert_eq!(decode(b""), None, "the writer closed without a word");
        assert_eq!(decode(b"A=b\0"), None, "cut before the end mark");
        assert_eq!(decode(b"A=b"), None);
        assert_eq!(decode(b"novalue\0\0"), None);
        assert_eq!(decode(b"=v\0\0"), None);
        assert_eq!(decode(b"A=\xff\0\0"), None);
    }
}
