//! `gate.yaml` loaded and checked: every problem the gate would otherwise meet at the first
//! fetch (a repo without a pinned host key, a key it cannot read) is found at start and on
//! reload, and told in one line.

use bottle_contract::gate::{GateFile, GateRepo};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A checked `gate.yaml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file as read.
    pub file: GateFile,
    /// The repos by name.
    repos: BTreeMap<String, GateRepo>,
}

/// Why a config cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Not the schema.
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    /// A bad repo entry.
    #[error("{0}: repo `{1}`: {2}")]
    Repo(PathBuf, String, String),
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let file: GateFile = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        Config::check(path, file)
    }

    /// Check a parsed file (`path` names it in errors).
    pub fn check(path: &Path, file: GateFile) -> Result<Config, ConfigError> {
        let known_hosts = Path::new(&file.known_hosts);
        let pinned = std::fs::read_to_string(known_hosts).map_err(|e| {
            ConfigError::Parse(
                path.to_owned(),
                format!("known_hosts {}: {e}", known_hosts.display()),
            )
        })?;
        let pinned = pinned_names(&pinned);
        let mut repos = BTreeMap::new();
        for repo in &file.repos {
            let bad = |why: String| ConfigError::Repo(path.to_owned(), repo.name.clone(), why);
            if crate::request::parse(
                format!("git-upload-pack /{}.git\0", repo.name).as_bytes(),
                None,
            )
            .map(|r| r.repo != repo.name)
            .unwrap_or(true)
            {
                return Err(bad(
                    "the name must be letters, digits, `-`, `_` and `.`".into()
                ));
            }
            let name = repo.known_hosts_name();
            if !pinned.contains(&name) {
                return Err(bad(format!(
                    "no pinned host key for `{name}` in {}; git-gate never trusts a host on first use: \
                     give the repo's `known_host:` in the manifest (`ssh-keyscan -p {} {}` prints it)",
                    known_hosts.display(),
                    repo.port,
                    repo.host
                )));
            }
            check_key(Path::new(&repo.key)).map_err(bad)?;
            if repos.insert(repo.name.clone(), repo.clone()).is_some() {
                return Err(bad("listed twice".into()));
            }
        }
        Ok(Config { file, repos })
    }

    /// The repo served as `name`.
    pub fn repo(&self, name: &str) -> Option<&GateRepo> {
        self.repos.get(name)
    }

    /// The names served.
    pub fn names(&self) -> Vec<&str> {
        self.repos.keys().map(String::as_str).collect()
    }
}

/// Every host name `known_hosts` pins (plain entries; markers and hashed names are skipped,
/// since bottle writes neither).
fn pinned_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let hosts = f.next()?;
            f.next()?;
            f.next()?;
            Some(hosts.split(',').map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// The key must be a file this process can read (ssh, run as this user, reads it).
fn check_key(key: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(key).map_err(|e| format!("SSH key {}: {e}", key.display()))?;
    if !meta.is_file() {
        return Err(format!("SSH key {} is not a file", key.display()));
    }
    let mut byte = [0u8; 1];
    match std::fs::File::open(key).and_then(|mut f| f.read(&mut byte)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cannot read the SSH key {} as uid {} ({e}); it is owned by uid {} with mode {:04o}: \
             it must be readable by git-gate's user",
            key.display(),
            rustix::process::geteuid().as_raw(),
            meta.uid(),
            meta.mode() & 0o7777
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_names_read_plain_entries() {
        let names = pinned_names(
            "# c\ngithub.com ssh-ed25519 AAAA\n[h]:2222,alias ssh-rsa BBBB\n@revoked x ssh-rsa C\nbroken\n",
        );
        assert_eq!(names, ["github.com", "[h]:2222", "alias"]);
    }

    fn fixture(dir: &Path, known: &str, key_mode: u32) -> GateFile {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("kh"), known).unwrap();
        std::fs::write(dir.join("id"), "key").unwrap();
        std::fs::set_permissions(dir.join("id"), std::fs::Permissions::from_mode(key_mode))
            .unwrap();
        serde_yaml::from_str(&format!(
            "known_hosts: {0}/kh\nrepos:\n- {{name: a, upstream: 'ssh://git@h:2222/a.git', host: h, port: 2222, key: {0}/id}}\n",
            dir.display()
        ))
        .unwrap()
    }

    #[test]
    fn a_repo_without_a_pinned_key_is_refused_with_the_fix() {
        let dir = tempdir();
        let e = Config::check(
            Path::new("gate.yaml"),
            fixture(&dir, "h ssh-ed25519 AAAA\n", 0o600),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no pinned host key for `[h]:2222`"), "{e}");
        assert!(e.contains("ssh-keyscan -p 2222 h"), "{e}");
        let ok = Config::check(
            Path::new("g"),
            fixture(&dir, "[h]:2222 ssh-ed25519 AAAA\n", 0o600),
        );
        assert_eq!(ok.unwrap().names(), ["a"]);
    }

    #[test]
    fn a_missing_key_is_refused() {
        let dir = tempdir();
        let mut file = fixture(&dir, "[h]:2222 ssh-ed25519 AAAA\n", 0o600);
        file.repos[0].key = format!("{}/nope", dir.display());
        let e = Config::check(Path::new("g"), file).unwrap_err().to_string();
        assert!(e.contains("repo `a`: SSH key") && e.contains("nope"), "{e}");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gate-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
