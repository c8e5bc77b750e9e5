//! The host environment, read once at the command-line edge and passed in.
//!
//! Planning, policy and manifest parsing read no env var of their own: the CLI takes one
//! [`HostEnv`] snapshot of the process env and hands it (or the value it derived) down, so
//! those stay pure functions a test can call with any environment. Secrets are read from the
//! same snapshot at launch, by name; `Debug` never shows a value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A snapshot of the env vars bottle runs with (those whose name and value are UTF-8).
#[derive(Clone, Default)]
pub struct HostEnv {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may be secrets.
        f.debug_struct("HostEnv")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where bottle connects when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

impl HostEnv {
    /// This process's env, read now.
    pub fn from_process() -> HostEnv {
        HostEnv::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An env of exactly `vars` (tests, and embedders).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> HostEnv {
        HostEnv {
            vars: vars.into_iter().collect(),
        }
    }

    /// The value of `name`, empty or not (a secret may be empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value of `name` when set and not empty (paths, image names, switches).
    pub fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// `$HOME`.
    pub fn home(&self) -> Option<PathBuf> {
        self.nonempty("HOME").map(PathBuf::from)
    }

    fn xdg(&self, var: &str, fallback: &str) -> Option<PathBuf> {
        // The XDG spec: a relative path in these variables is invalid and ignored.
        self.nonempty(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| self.home().map(|h| h.join(fallback)))
    }

    /// Compiled plugin cache: `$BOTTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bottle`, else
    /// `~/.cache/bottle`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.nonempty("BOTTLE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                self.xdg("XDG_CACHE_HOME", ".cache")
                    .map(|d| d.join("bottle"))
            })
    }

    /// Per-bottle state: `$BOTTLE_STATE_DIR`, else `$XDG_STATE_HOME/bottle`, else
    /// `~/.local/state/bottle`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.nonempty("BOTTLE_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                self.xdg("XDG_STATE_HOME", ".local/state")
                    .map(|d| d.join("bottle"))
            })
    }

    /// User config (agent manifests, confirmed manifests): `$XDG_CONFIG_HOME/bottle`, else
    /// `~/.config/bottle`.
    pub fn config_dir(&self) -> Option<PathBuf> {
        self.xdg("XDG_CONFIG_HOME", ".config")
            .map(|d| d.join("bottle"))
    }

    /// Where bottle connects: `$DOCKER_HOST`, else [`DEFAULT_DOCKER_HOST`].
    pub fn docker_host(&self) -> String {
        self.nonempty("DOCKER_HOST")
            .unwrap_or(DEFAULT_DOCKER_HOST)
            .to_owned()
    }

    /// The Docker socket's path when Docker is reached over a unix socket.
    pub fn docker_socket(&self) -> Option<String> {
        self.docker_host()
            .strip_prefix("unix://")
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> HostEnv {
        HostEnv::from_vars(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn dirs_follow_bottles_vars_then_xdg_then_home() {
        let e = env(&[("HOME", "/h")]);
        assert_eq!(e.cache_dir().unwrap(), PathBuf::from("/h/.cache/bottle"));
        assert_eq!(
            e.state_dir().unwrap(),
            PathBuf::from("/h/.local/state/bottle")
        );
        assert_eq!(e.config_dir().unwrap(), PathBuf::from("/h/.config/bottle"));
        let e = env(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x"),
            ("BOTTLE_STATE_DIR", "/s"),
            ("XDG_CACHE_HOME", ""),
        ]);
        assert_eq!(e.config_dir().unwrap(), PathBuf::from("/x/bottle"));
        assert_eq!(e.state_dir().unwrap(), PathBuf::from("/s"));
        assert_eq!(e.cache_dir().unwrap(), PathBuf::from("/h/.cache/bottle"));
        assert_eq!(env(&[]).config_dir(), None);
        // A relative XDG dir is ignored (it would follow the cwd).
        let e = env(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "rel")]);
        assert_eq!(e.config_dir().unwrap(), PathBuf::from("/h/.config/bottle"));
    }

    #[test]
    fn docker_host_defaults_to_the_local_socket_and_debug_shows_no_value() {
        assert_eq!(env(&[]).docker_socket().unwrap(), "/var/run/docker.sock");
        let e = env(&[("DOCKER_HOST", "tcp://h:2375"), ("TOKEN", "s3cret")]);
        assert_eq!(e.docker_socket(), None);
        assert_eq!(e.get("TOKEN"), Some("s3cret"));
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
