//! Kubernetes without a live cluster: the rendered manifests completed from the state dir and
//! handed to the user with the one command that applies them.
//!
//! The backend plugin renders every ConfigMap and Secret with empty `data` and the annotation
//! [`SOURCE`] (`state:<path in the state dir>` or `host:<absolute path>`): a plugin
//! never reads files. Here the host fills them: a file gives one key (its name), a dir one key
//! per regular file in it. Credentials are never filled: the pods name the Secret
//! `bottle-<slug>-credentials`, which the user creates from their own env.

use base64::Engine as _;
use bottle_contract::labels::SOURCE;
use std::path::{Path, PathBuf};

/// The rendered manifests, in the state dir.
pub const MANIFEST: &str = "kubernetes/bottle.yaml";
/// The most bytes one object may carry (the API server's limit is about 1 MiB).
const MAX_OBJECT_BYTES: usize = 1 << 20;

/// Why the manifests could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("{}: {detail}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The rendered manifest is not what the contract says.
    #[error("{}: {detail}; the kubernetes backend plugin rendered it wrong", path.display())]
    Rendered {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// What the user gets: the file and the commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff {
    /// The completed manifests.
    pub file: PathBuf,
    /// The one command that applies them.
    pub apply: String,
    /// The command that creates the credentials Secret, when the bottle has credentials.
    pub credentials: Option<String>,
}

/// A credential the pods read from `bottle-<slug>-credentials`: its key and where its value
/// comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key in the Secret.
    pub key: String,
    /// Where the value is.
    pub from: CredentialSource,
}

/// Where a credential's value is when the Secret is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The user's env var (their own secret, never written by bottle).
    Env(String),
    /// A file bottle wrote in the private state dir (the run's hop token).
    File(PathBuf),
}

/// Fill the rendered manifests in `state_dir` and say how to apply them.
pub fn hand_off(
    state_dir: &Path,
    slug: &str,
    credentials: &[Credential],
) -> Result<HandOff, ManifestError> {
    let file = state_dir.join(MANIFEST);
    let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Io {
        path: file.clone(),
        detail: e.to_string(),
    })?;
    let filled = fill(&text, state_dir, &file)?;
    crate::live::apply::write_whole(&file, filled.as_bytes(), 0o600).map_err(|e| {
        ManifestError::Io {
            path: file.clone(),
            detail: e.to_string(),
        }
    })?;
    let credentials = (!credentials.is_empty()).then(|| {
        let literals: Vec<String> = credentials
            .iter()
            .map(|c| match &c.from {
                CredentialSource::Env(var) => format!("--from-literal={}=\"${var}\"", c.key),
                CredentialSource::File(path) => {
                    format!("--from-file={}={}", c.key, path.display())
                }
            })
            .collect();
        format!(
            "kubectl create secret generic bottle-{slug}-credentials {}",
            literals.join(" ")
        )
    });
    Ok(HandOff {
        apply: format!("kubectl apply -f {}", file.display()),
        file,
        credentials,
    })
}

/// `text` (a YAML stream) with every annotated ConfigMap and Secret filled.
pub fn fill(text: &str, state_dir: &Path, file: &Path) -> Result<String, ManifestError> {
    use serde::Deserialize as _;
    let rendered = |detail: String| ManifestError::Rendered {
        path: file.to_owned(),
        detail,
    };
    let mut out = String::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let mut value = serde_yaml::Value::deserialize(doc).map_err(|e| rendered(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let source = value["metadata"]["annotations"][SOURCE]
            .as_str()
            .map(str::to_owned);
        if let Some(source) = source {
            let secret = match kind.as_str() {
                "Secret" => true,
                "ConfigMap" => false,
                other => {
                    return Err(rendered(format!(
                        "{SOURCE} on a {other}; only ConfigMaps and Secrets are filled"
                    )));
                }
            };
            let path = source_path(&source, state_dir).ok_or_else(|| {
                rendered(format!(
                    "{SOURCE}: {source:?} is no state:PATH or host:/PATH"
                ))
            })?;
            let (data, binary) = read_source(&path, secret)?;
            let bytes: usize = data.values().chain(binary.values()).map(String::len).sum();
            if bytes > MAX_OBJECT_BYTES {
                return Err(ManifestError::Io {
                    path,
                    detail: format!("{bytes} bytes, more than a {kind} can hold (1 MiB)"),
                });
            }
            let map = value
                .as_mapping_mut()
                .ok_or_else(|| rendered("a document that is no mapping".into()))?;
            map.insert("data".into(), to_yaml_map(data));
            if !binary.is_empty() {
                map.insert("binaryData".into(), to_yaml_map(binary));
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).map_err(|e| rendered(e.to_string()))?);
    }
    Ok(out)
}

fn to_yaml_map(m: std::collections::BTreeMap<String, String>) -> serde_yaml::Value {
    serde_yaml::Value::Mapping(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
}

/// The host path an annotation names; a state path never leaves the state dir.
fn source_path(source: &str, state_dir: &Path) -> Option<PathBuf> {
    if let Some(rel) = source.strip_prefix("state:") {
        let rel = Path::new(rel);
        let inside = rel.is_relative()
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        return inside.then(|| state_dir.join(rel));
    }
    source
        .strip_prefix("host:")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

type DataMaps = (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
);

/// The keys of one source: `data` (text, or base64 for a Secret) and `binaryData` (a
/// ConfigMap's non-UTF-8 files, base64).
fn read_source(path: &Path, secret: bool) -> Result<DataMaps, ManifestError> {
    let io = |p: &Path, e: std::io::Error| ManifestError::Io {
        path: p.to_owned(),
        detail: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut v = Vec::new();
        for e in std::fs::read_dir(path).map_err(|e| io(path, e))? {
            let p = e.map_err(|e| io(path, e))?.path();
            let m = std::fs::metadata(&p).map_err(|e| io(&p, e))?;
            if m.is_dir() {
                return Err(ManifestError::Io {
                    path: p,
                    detail: "a dir inside a dir a ConfigMap or Secret carries: Kubernetes projects one level only".into(),
                });
            }
            if m.is_file() {
                v.push(p);
            }
        }
        v.sort();
        v
    } else {
        vec![path.to_owned()]
    };
    let (mut data, mut binary) = DataMaps::default();
    let b64 = base64::engine::general_purpose::STANDARD;
    for f in files {
        let key = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&f).map_err(|e| io(&f, e))?;
        if secret {
            data.insert(key, b64.encode(&bytes));
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => {
                    data.insert(key, text);
                }
                Err(e) => {
                    binary.insert(key, b64.encode(e.into_bytes()));
                }
            }
        }
    }
    Ok((data, binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bottle-x-egress\n  annotations:\n    io.bottle.source: state:egress\ndata: {}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bottle-x-ca\n  annotations:\n    io.bottle.source: state:ca/key.pem\ndata: {}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";

    #[test]
    fn configmaps_get_text_and_secrets_base64_from_the_state_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("egress")).unwrap();
        std::fs::create_dir_all(d.path().join("ca")).unwrap();
        std::fs::write(d.path().join("egress/routes.yaml"), "routes: []\n").unwrap();
        std::fs::write(d.path().join("ca/key.pem"), "KEY").unwrap();
        let out = fill(RENDERED, d.path(), Path::new("bottle.yaml")).unwrap();
        let docs: Vec<serde_yaml::Value> = out
            .split("---\n")
            .filter(|s| !s.trim().is_empty())
            .map(|s| serde_yaml::from_str(s).unwrap())
            .collect();
        assert_eq!(docs[0]["data"]["routes.yaml"], "routes: []\n");
        assert_eq!(docs[1]["data"]["key.pem"], "S0VZ");
        assert_eq!(docs[2]["kind"], "Pod");
    }

    #[test]
    fn a_source_outside_the_state_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let bad = RENDERED.replace("state:egress", "state:../../etc");
        let e = fill(&bad, d.path(), Path::new("bottle.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no state:PATH"), "{e}");
    }
}

/// The driver of a backend with no live engine here: it launches nothing and runs nothing,
/// so a run of it ends in [`hand_off`] instead.
#[derive(Debug, Clone, Copy)]
pub struct Manifests;

impl super::Driver for Manifests {
    fn name(&self) -> &str {
        "manifests"
    }

    fn probe<'a>(
        &'a self,
        _slug: &'a str,
        _state_root: &'a Path,
    ) -> super::BoxFuture<'a, Result<(), crate::run::launch::LaunchError>> {
        Box::pin(async { Ok(()) })
    }

    fn up<'a>(
        &'a self,
        launch: &'a super::Launch<'a>,
    ) -> super::BoxFuture<
        'a,
        Result<Box<dyn super::Started<'a> + 'a>, crate::run::launch::LaunchError>,
    > {
        let backend = &launch.prepared.plan.backend;
        let why = format!("the {backend} backend hands its manifests over instead of launching");
        Box::pin(async move { Err(crate::run::launch::LaunchError::Unsupported(why)) })
    }

    fn logs<'a>(
        &'a self,
        _slug: &'a str,
        _state_dir: &'a Path,
    ) -> super::BoxFuture<'a, Result<String, crate::run::launch::LaunchError>> {
        Box::pin(async { Ok(String::new()) })
    }

    fn down<'a>(
        &'a self,
        _slug: &'a str,
        _teardown: super::Teardown<'a>,
    ) -> super::BoxFuture<'a, Result<(), crate::run::launch::LaunchError>> {
        Box::pin(async { Ok(()) })
    }

    fn list<'a>(
        &'a self,
        _state_root: &'a Path,
    ) -> super::BoxFuture<'a, Result<Vec<super::Part>, crate::run::launch::LaunchError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
