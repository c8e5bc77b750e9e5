//! The daemons' log lines the audit ledger is built from: numbered, and ASCII only.
//!
//! Each line egress and git-gate write is a JSON object that carries its place in the daemon's
//! output (`"seq":1` for the first), so the ledger can tell a line that is not there (rotated
//! away by the engine's log limit, or unreadable) from one that never was, and record the gap
//! instead of passing over it. Every character past ASCII is written as a `\u` escape: the
//! merged log makes what a part wrote safe to print, and would otherwise rewrite the agent's
//! characters inside a JSON string (a soft hyphen in a path) into text that no longer parses.

/// The field that holds a line's place in its daemon's output.
pub const SEQ_FIELD: &str = "seq";

/// `object` (one serialised JSON object) as line `seq` of a daemon's output: the field
/// [`SEQ_FIELD`] first, every character past ASCII and DEL escaped.
pub fn numbered(seq: u64, object: &str) -> String {
    let rest = object.strip_prefix('{').unwrap_or(object);
    let mut out = String::with_capacity(object.len() + 16);
    out.push_str("{\"");
    out.push_str(SEQ_FIELD);
    out.push_str("\":");
    out.push_str(&seq.to_string());
    if rest.trim_start() != "}" {
        out.push(',');
    }
    if rest.bytes().all(|b| b < 0x7f) {
        out.push_str(rest);
        return out;
    }
    // Outside a string JSON is ASCII, so every such character is inside one, where an escape
    // means the same character.
    for c in rest.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn a_line_is_numbered_first_and_reads_back_as_the_same_object() {
        let object = serde_json::json!({"path": "/up/x\u{ad}\u{202e}\u{1f600}\u{7f}", "n": 1});
        let line = numbered(7, &object.to_string());
        assert!(line.is_ascii(), "{line}");
        assert!(line.starts_with("{\"seq\":7,"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["path"], object["path"]);
        assert_eq!(back["seq"], 7);
        assert_eq!(numbered(1, "{}"), "{\"seq\":1}");
    }
}
