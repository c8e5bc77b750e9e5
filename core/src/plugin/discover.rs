//! Finding plugins: the built-ins, then every `*.wasm` in each `--plugin-dir`.

use super::{LoadError, LoadedPlugin, PluginHost, PluginSource, builtins};
use crate::model::PluginKind;
use bottle_contract::layout;
use std::path::{Path, PathBuf};

/// A plugin from a plugin dir that replaced a built-in of the same name.
#[derive(Debug, Clone)]
pub struct Override {
    /// The shared name.
    pub name: String,
    /// The file that won.
    pub by: PluginSource,
}

/// Every plugin of this run, sorted by name, one per name.
#[derive(Debug, Clone, Default)]
pub struct PluginSet {
    plugins: Vec<LoadedPlugin>,
    overrides: Vec<Override>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// A plugin failed to load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin dir could not be listed.
    #[error("--plugin-dir {}: cannot list it: {error}", dir.display())]
    ReadDir {
        /// The dir.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A plugin takes a name bottle keeps for itself.
    #[error(
        "{source_path}: the plugin name `{name}` is reserved (it names a part of every bottle); rename the plugin"
    )]
    Reserved {
        /// The name.
        name: String,
        /// The file.
        source_path: PluginSource,
    },
    /// Two plugin-dir files give the same plugin name.
    #[error("two plugins are named `{name}`: {first} and {second}; remove or rename one")]
    Duplicate {
        /// The name.
        name: String,
        /// The first file.
        first: PluginSource,
        /// The second file.
        second: PluginSource,
    },
}

/// Names no plugin may take: they name parts of every bottle (the agent, its bundle, the
/// CAs, bottle itself) in grants, labels and compose keys.
pub const RESERVED_NAMES: [&str; 5] = [
    layout::AGENT_SERVICE,
    layout::BUNDLE_DIR,
    layout::CA_DIR,
    "bottle",
    layout::BUNDLE_SERVICE,
];

impl PluginSet {
    /// All plugins, sorted by name.
    pub fn all(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Sidecar plugins, sorted by name.
    pub fn sidecars(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.plugins
            .iter()
            .filter(|p| p.info().kind == PluginKind::Sidecar)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// Built-ins that a plugin dir replaced.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// Names of the backend plugins.
    pub fn backend_names(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter(|p| p.info().kind == PluginKind::Backend)
            .map(|p| p.name())
            .collect()
    }
}

/// Load the built-ins and every `*.wasm` in `dirs` (in order, files sorted by name).
///
/// A plugin-dir plugin replaces the built-in of the same name (reported by a warning and in
/// [`PluginSet::overrides`]); two plugin-dir plugins with one name are an error.
pub fn discover(host: &PluginHost, dirs: &[PathBuf]) -> Result<PluginSet, DiscoverError> {
    let mut set = PluginSet::default();
    for b in builtins() {
        set.plugins
            .push(host.load(PluginSource::Builtin(b.file), b.bytes, Some(b.hash))?);
    }
    let builtin_count = set.plugins.len();
    for dir in dirs {
        for path in wasm_files(dir)? {
            let source = PluginSource::File(path.clone());
            let bytes = std::fs::read(&path).map_err(|error| LoadError::Read {
                source_path: source.clone(),
                error,
            })?;
            let plugin = host.load(source.clone(), &bytes, None)?;
            if RESERVED_NAMES.contains(&plugin.name()) {
                return Err(DiscoverError::Reserved {
                    name: plugin.name().to_owned(),
                    source_path: source,
                });
            }
            match set.plugins.iter().position(|p| p.name() == plugin.name()) {
                Some(i)
                    if i < builtin_count
                        && !set.overrides.iter().any(|o| o.name == plugin.name()) =>
                {
                    tracing::warn!(
                        "plugin `{}` from {source} replaces the built-in one",
                        plugin.name()
                    );
                    set.overrides.push(Override {
                        name: plugin.name().to_owned(),
                        by: source,
                    });
                    set.plugins[i] = plugin;
                }
                Some(i) => {
                    return Err(DiscoverError::Duplicate {
                        name: plugin.name().to_owned(),
                        first: set.plugins[i].source().clone(),
                        second: source,
                    });
                }
                None => set.plugins.push(plugin),
            }
        }
    }
    set.plugins.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(set)
}

fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, DiscoverError> {
    let read_err = |error| DiscoverError::ReadDir {
        dir: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
