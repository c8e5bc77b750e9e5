//! A name for each daemon's uid in `/etc/passwd` and `/etc/group`.
//!
//! The uids are the host's choice (61000 + the plugin's place) and the bundle image has no
//! entries for them; ssh, which git-gate runs to reach upstream, refuses to run for a uid
//! without one ("No user exists for uid"). Entries are appended, never rewritten.

use std::io::Write;
use std::path::Path;

/// Make sure `uid` has a passwd and a group entry under `etc` (named `bottle-<uid>`, no home,
/// no login shell).
pub fn ensure(etc: &Path, uid: u32) -> Result<(), String> {
    let name = format!("bottle-{uid}");
    append_if_missing(
        &etc.join("passwd"),
        uid,
        &format!("{name}:x:{uid}:{uid}:bottle daemon:/nonexistent:/usr/sbin/nologin\n"),
    )?;
    append_if_missing(&etc.join("group"), uid, &format!("{name}:x:{uid}:\n"))
}

fn append_if_missing(file: &Path, id: u32, line: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let taken = text
        .lines()
        .any(|l| l.split(':').nth(2).is_some_and(|f| f == id.to_string()));
    if taken {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .map_err(|e| format!("cannot add uid {id} to {}: {e}", file.display()))?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{line}").as_bytes())
        .map_err(|e| format!("cannot add uid {id} to {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once() {
        let dir = std::env::temp_dir().join(format!("init-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("passwd"), "root:x:0:0:root:/root:/bin/bash").unwrap();
        ensure(&dir, 61001).unwrap();
        ensure(&dir, 61001).unwrap();
        let passwd = std::fs::read_to_string(dir.join("passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/bash\nbottle-61001:x:61001:61001:bottle daemon:/nonexistent:/usr/sbin/nologin\n"
        );
        let group = std::fs::read_to_string(dir.join("group")).unwrap();
        assert_eq!(group, "bottle-61001:x:61001:\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
