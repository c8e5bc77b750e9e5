//! The images bottle builds itself: the sidecar bundle (`bottle images build`).

use super::{DockerError, api};
use crate::hostenv::HostEnv;
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

pub use bottle_contract::layout::BUNDLE_IMAGE;
/// The base the bundle builds on (see `tests/images/build-base.sh`).
pub const DEFAULT_BASE_IMAGE: &str = "bottle-base:latest";
/// The pipelock image the bundle copies `/pipelock` from (2.3.0, the version the config
/// renderer targets). Its digest is not known here (no registry): pin one with
/// `BOTTLE_PIPELOCK_IMAGE=ghcr.io/luckypipewrench/pipelock:2.3.0@sha256:<digest>`, and put it
/// here once known; see [`PipelockPin`].
pub const PIPELOCK_IMAGE: &str = "ghcr.io/luckypipewrench/pipelock:2.3.0";

/// The pipelock image reference to use: `$BOTTLE_PIPELOCK_IMAGE`, else [`PIPELOCK_IMAGE`].
pub fn pipelock_image(env: &HostEnv) -> String {
    env.nonempty("BOTTLE_PIPELOCK_IMAGE")
        .unwrap_or(PIPELOCK_IMAGE)
        .to_owned()
}

/// An image reference `name[:tag][@sha256:<64 hex>]`, split so the digest can be checked
/// against what is loaded locally.
///
/// With a digest, the local image must carry it, either as its image id (the config digest,
/// which `docker save`/`docker load` keep, so the pin holds on a machine without a registry)
/// or among its repo digests (the manifest digest a pull records). Without one, the image is
/// pinned by tag only, and `bottle images build` says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelockPin {
    /// `name` or `name:tag`.
    pub name_tag: String,
    /// `sha256:<64 hex>`, when pinned.
    pub digest: Option<String>,
}

impl std::str::FromStr for PipelockPin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "BOTTLE_PIPELOCK_IMAGE={s:?}: {why}; give `name:tag`, `name@sha256:<64 hex>` or both"
            )
        };
        let (name_tag, digest) = match s.split_once('@') {
            None => (s, None),
            Some((name_tag, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest must start with `sha256:`"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad("a sha256 digest is 64 lower-case hex digits"));
                }
                (name_tag, Some(digest.to_owned()))
            }
        };
        if name_tag.is_empty() || name_tag.contains(char::is_whitespace) {
            return Err(bad("the image name is missing"));
        }
        Ok(PipelockPin {
            name_tag: name_tag.to_owned(),
            digest,
        })
    }
}

impl PipelockPin {
    /// The configured pin (see [`pipelock_image`]).
    pub fn configured(env: &HostEnv) -> Result<Self, DockerError> {
        pipelock_image(env).parse().map_err(DockerError::Host)
    }

    /// The image name without tag (for matching repo digests).
    fn name(&self) -> &str {
        match self.name_tag.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => &self.name_tag,
        }
    }

    /// Whether an image with id `id` and `repo_digests` is the pinned one.
    pub fn matches(&self, id: &str, repo_digests: &[String]) -> bool {
        match &self.digest {
            None => true,
            Some(d) => {
                id == d
                    || repo_digests
                        .iter()
                        .any(|r| *r == format!("{}@{d}", self.name()))
            }
        }
    }

    /// Find the image locally: its id, `None` when absent, an error when a different image
    /// carries the name (fail closed: a bundle is never built from an unpinned pipelock).
    pub async fn resolve(&self, docker: &Docker) -> Result<Option<String>, DockerError> {
        let mut candidates = vec![self.name_tag.clone()];
        if let Some(d) = &self.digest {
            candidates.insert(0, format!("{}@{d}", self.name()));
        }
        for reference in candidates {
            let info = match docker.inspect_image(&reference).await {
                Ok(info) => info,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(api(format!("looking for image {reference}"))(e)),
            };
            let id = info.id.unwrap_or_default();
            let repo_digests = info.repo_digests.unwrap_or_default();
            if !self.matches(&id, &repo_digests) {
                return Err(DockerError::Host(format!(
                    "the local image {reference} is {id}, not the pinned {}; load the pinned image (`docker load`) or fix BOTTLE_PIPELOCK_IMAGE",
                    self.digest.as_deref().unwrap_or_default()
                )));
            }
            return Ok(Some(id));
        }
        Ok(None)
    }
}
/// The label saying whether the bundle carries pipelock.
pub const PIPELOCK_LABEL: &str = "io.bottle.pipelock";

const DOCKERFILE: &str = include_str!("../../../images/sidecars/Dockerfile");

include!(concat!(env!("OUT_DIR"), "/bundle_binaries.rs"));

/// Write embedded program `bytes` to `<state_dir>/bin/<name>` (0755), for the agent's
/// read-only mount: written fresh each run, so nothing the agent did to an earlier copy runs.
pub fn install_program(
    state_dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf, DockerError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = state_dir.join("bin");
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    };
    write().map_err(|e| {
        DockerError::Host(format!(
            "cannot write {name} to {}: {e}; check the state dir's permissions",
            path.display()
        ))
    })?;
    Ok(path)
}

/// The programs the bundle image carries, by their name in it, with their sha256 (taken when
/// they were embedded): one list for the build context and for [`content_hash`], so a changed
/// daemon always rebuilds the image (a list of its own once left out `bottle-supervise`, and a
/// changed supervise ran in the old image).
const BUNDLE_BINARIES: [(&str, &[u8], &str); 4] = [
    ("bottle-init", INIT_BINARY, INIT_BINARY_SHA256),
    ("bottle-egress", EGRESS_BINARY, EGRESS_BINARY_SHA256),
    ("bottle-git-gate", GIT_GATE_BINARY, GIT_GATE_BINARY_SHA256),
    (
        "bottle-supervise",
        SUPERVISE_BINARY,
        SUPERVISE_BINARY_SHA256,
    ),
];

/// The label holding [`content_hash`]: an image built by another bottle is rebuilt.
pub const CONTENT_LABEL: &str = "io.bottle.content";

/// sha256 of what this bottle puts into the bundle (the Dockerfile, and each program by name
/// and digest): a bundle image with another value was built by another version and is rebuilt
/// before use.
pub fn content_hash() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((DOCKERFILE.len() as u64).to_le_bytes());
    h.update(DOCKERFILE);
    for (name, _, digest) in BUNDLE_BINARIES {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(digest);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// Whether pipelock is in the image.
    pub pipelock: bool,
    /// Whether that pipelock was checked against a digest (false: pinned by tag only).
    pub pipelock_verified: bool,
}

/// Write `image` as a `docker save` archive to `path` (a new file, 0600), streamed: a large
/// image never sits in memory whole.
pub async fn save(docker: &Docker, image: &str, path: &std::path::Path) -> Result<(), DockerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let host = |e: std::io::Error| {
        DockerError::Host(format!(
            "cannot write the image archive {}: {e}",
            path.display()
        ))
    };
    let _ = std::fs::remove_file(path);
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(host)?,
    );
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(api(format!("saving the image {image}")))?;
        out.write_all(&chunk).map_err(host)?;
    }
    out.into_inner()
        .map_err(|e| host(e.into_error()))?
        .sync_all()
        .map_err(host)
}

/// Whether `image` exists locally.
pub async fn exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(api(format!("looking for image {image}"))(e)),
    }
}

/// What a local bundle image is, from its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleImage {
    /// It carries pipelock.
    pub pipelock: bool,
    /// It was built from this bottle's programs ([`content_hash`]).
    pub current: bool,
}

/// The bundle image `image`, or `None` when it is not there.
pub async fn inspect_bundle(
    docker: &Docker,
    image: &str,
) -> Result<Option<BundleImage>, DockerError> {
    let info = match docker.inspect_image(image).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(api(format!("inspecting image {image}"))(e)),
    };
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    Ok(Some(BundleImage {
        pipelock: labels.get(PIPELOCK_LABEL).is_some_and(|v| v == "present"),
        current: labels.get(CONTENT_LABEL) == Some(&content_hash()),
    }))
}

/// Whether the bundle image `image` carries pipelock (from its label).
pub async fn has_pipelock(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    Ok(inspect_bundle(docker, image)
        .await?
        .is_some_and(|b| b.pipelock))
}

/// The Dockerfile, with the pipelock stage from `pipelock` when given.
pub fn dockerfile(pipelock: Option<&str>) -> String {
    let (stage, copy, label) = match pipelock {
        Some(image) => (
            format!("FROM {image} AS pipelock"),
            "COPY --from=pipelock /pipelock /usr/local/bin/pipelock",
            "present",
        ),
        None => (String::new(), "", "absent"),
    };
    DOCKERFILE
        .replace("# @PIPELOCK_STAGE@", &stage)
        .replace("# @PIPELOCK_COPY@", copy)
        .replace(
            "LABEL io.bottle.image=sidecars",
            &format!(
                "LABEL io.bottle.image=sidecars {PIPELOCK_LABEL}={label} {CONTENT_LABEL}={}",
                content_hash()
            ),
        )
}

fn context(dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for (name, binary, _) in BUNDLE_BINARIES {
        add(name, binary, 0o755)?;
    }
    tar.into_inner()
}

/// Build the bundle image from `base` with the embedded `bottle-init`, `bottle-egress`,
/// `bottle-git-gate` and `bottle-supervise`. `progress` sees each
/// step line of the build.
pub async fn build_sidecars(
    docker: &Docker,
    base: &str,
    env: &HostEnv,
    mut progress: impl FnMut(&str),
) -> Result<Built, DockerError> {
    if !exists(docker, base).await? {
        return Err(DockerError::Host(format!(
            "the base image {base} is missing; build it with `bash tests/images/build-base.sh` (no registry needed)"
        )));
    }
    let pin = PipelockPin::configured(env)?;
    // The stage names the verified image id, so the build cannot resolve the tag differently.
    let pipelock_id = pin.resolve(docker).await?;
    let tar = context(&dockerfile(pipelock_id.as_deref()))
        .map_err(|e| DockerError::Host(format!("cannot pack the build context: {e}")))?;
    let opts = BuildImageOptionsBuilder::default()
        .t(BUNDLE_IMAGE)
        .rm(true)
        .forcerm(true)
        .buildargs(&std::collections::HashMap::from([(
            "BASE".to_owned(),
            base.to_owned(),
        )]))
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(api(format!("building {BUNDLE_IMAGE}")))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(DockerError::Api {
                what: format!("building {BUNDLE_IMAGE}"),
                detail: err,
            });
        }
        if let Some(line) = info.stream {
            let line = line.trim();
            if !line.is_empty() {
                progress(line);
            }
        }
    }
    Ok(Built {
        pipelock: pipelock_id.is_some(),
        pipelock_verified: pipelock_id.is_some() && pin.digest.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::PipelockPin;

    #[test]
    fn every_program_the_dockerfile_copies_is_in_the_content_hash() {
        let copied: Vec<&str> = super::DOCKERFILE
            .lines()
            .filter_map(|l| l.strip_prefix("COPY "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let hashed: Vec<&str> = super::BUNDLE_BINARIES.iter().map(|(n, ..)| *n).collect();
        assert_eq!(copied, hashed);
    }

    #[test]
    fn each_programs_digest_is_of_the_bytes_embedded() {
        use sha2::{Digest, Sha256};
        for (name, bytes, digest) in super::BUNDLE_BINARIES {
            let actual: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(actual, digest, "{name}");
        }
    }

    const HEX: &str = "3b1a39aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn pins_parse_with_and_without_digest_and_bad_ones_say_why() {
        let tag: PipelockPin = "ghcr.io/luckypipewrench/pipelock:2.3.0".parse().unwrap();
        assert_eq!(tag.digest, None);
        let both: PipelockPin = format!("ghcr.io/luckypipewrench/pipelock:2.3.0@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(both.name_tag, "ghcr.io/luckypipewrench/pipelock:2.3.0");
        assert_eq!(both.name(), "ghcr.io/luckypipewrench/pipelock");
        let port: PipelockPin = format!("localhost:5000/pipelock@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(port.name(), "localhost:5000/pipelock");
        for (bad, why) in [
            ("x@md5:abc", "must start with `sha256:`"),
            ("x@sha256:abc", "64 lower-case hex"),
            ("@sha256:", "64 lower-case hex"),
            ("", "the image name is missing"),
        ] {
            let err = bad.parse::<PipelockPin>().unwrap_err();
            assert!(
                err.contains(why) && err.contains("BOTTLE_PIPELOCK_IMAGE"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_pin_matches_the_image_id_or_a_repo_digest_and_nothing_else() {
        let pin: PipelockPin = format!("ghcr.io/luckypipewrench/pipelock:2.3.0@sha256:{HEX}")
            .parse()
            .unwrap();
        let digest = format!("sha256:{HEX}");
        assert!(
            pin.matches(&digest, &[]),
            "the id: survives docker save/load"
        );
        assert!(pin.matches(
            "sha256:other",
            &[format!("ghcr.io/luckypipewrench/pipelock@{digest}")]
        ));
        assert!(!pin.matches("sha256:other", &[]));
        assert!(!pin.matches("sha256:other", &[format!("evil/pipelock@{digest}")]));
        let unpinned: PipelockPin = "pipelock:2.3.0".parse().unwrap();
        assert!(unpinned.matches("sha256:anything", &[]));
    }

    #[test]
    fn the_pipelock_stage_is_there_only_when_the_image_is() {
        let with = super::dockerfile(Some("sha256:0123"));
        assert!(with.contains("FROM sha256:0123 AS pipelock"));
        assert!(with.contains("COPY --from=pipelock /pipelock /usr/local/bin/pipelock"));
        assert!(with.contains("io.bottle.pipelock=present"));
        let without = super::dockerfile(None);
        assert!(!without.contains("pipelock /usr/local/bin"));
        assert!(without.contains("io.bottle.pipelock=absent"));
    }
}
