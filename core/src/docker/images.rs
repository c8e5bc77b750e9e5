//! The images bottle builds itself: the sidecar bundle (`bottle images build`).

use super::{DockerError, api};
use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

/// The sidecar bundle image.
pub const SIDECARS_IMAGE: &str = "bottle-sidecars:latest";
/// The base the bundle builds on (see `tests/images/build-base.sh`).
pub const DEFAULT_BASE_IMAGE: &str = "bottle-base:latest";
/// The pipelock image the bundle copies `/pipelock` from (2.3.0, the version the config
/// renderer targets). Pin it by digest with `BOTTLE_PIPELOCK_IMAGE=…pipelock@sha256:<digest>`
/// where a registry can tell you the digest; see [`pipelock_image`].
pub const PIPELOCK_IMAGE: &str = "ghcr.io/luckypipewrench/pipelock:2.3.0";

/// The pipelock image to use: `$BOTTLE_PIPELOCK_IMAGE`, else [`PIPELOCK_IMAGE`].
pub fn pipelock_image() -> String {
    std::env::var("BOTTLE_PIPELOCK_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| PIPELOCK_IMAGE.to_owned())
}
/// The label saying whether the bundle carries pipelock.
pub const PIPELOCK_LABEL: &str = "io.bottle.pipelock";

const DOCKERFILE: &str = include_str!("../../images/sidecars/Dockerfile");

include!(concat!(env!("OUT_DIR"), "/init_binary.rs"));

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// Whether pipelock is in the image.
    pub pipelock: bool,
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

/// Whether the bundle image `image` carries pipelock (from its label).
pub async fn has_pipelock(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    let info = docker
        .inspect_image(image)
        .await
        .map_err(api(format!("inspecting image {image}")))?;
    Ok(info
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(PIPELOCK_LABEL).cloned())
        .is_some_and(|v| v == "present"))
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
            &format!("LABEL io.bottle.image=sidecars {PIPELOCK_LABEL}={label}"),
        )
}

fn context(init: &[u8], dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    add("bottle-init", init, 0o755)?;
    tar.into_inner()
}

/// Build the bundle image from `base` with the embedded `bottle-init`. `progress` sees each
/// step line of the build.
pub async fn build_sidecars(
    docker: &Docker,
    base: &str,
    mut progress: impl FnMut(&str),
) -> Result<Built, DockerError> {
    if !exists(docker, base).await? {
        return Err(DockerError::Host(format!(
            "the base image {base} is missing; build it with `bash tests/images/build-base.sh` (no registry needed)"
        )));
    }
    let pipelock_image = pipelock_image();
    let pipelock = exists(docker, &pipelock_image).await?;
    let tar = context(
        INIT_BINARY,
        &dockerfile(pipelock.then_some(pipelock_image.as_str())),
    )
    .map_err(|e| DockerError::Host(format!("cannot pack the build context: {e}")))?;
    let opts = BuildImageOptionsBuilder::default()
        .t(SIDECARS_IMAGE)
        .rm(true)
        .forcerm(true)
        .buildargs(&std::collections::HashMap::from([(
            "BASE".to_owned(),
            base.to_owned(),
        )]))
        .build();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(api(format!("building {SIDECARS_IMAGE}")))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(DockerError::Api {
                what: format!("building {SIDECARS_IMAGE}"),
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
    Ok(Built { pipelock })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pipelock_stage_is_there_only_when_the_image_is() {
        let with = super::dockerfile(Some("ghcr.io/luckypipewrench/pipelock@sha256:0123"));
        assert!(with.contains("FROM ghcr.io/luckypipewrench/pipelock@sha256:0123 AS pipelock"));
        assert!(with.contains("COPY --from=pipelock /pipelock /usr/local/bin/pipelock"));
        assert!(with.contains("io.bottle.pipelock=present"));
        let without = super::dockerfile(None);
        assert!(!without.contains("pipelock /usr/local/bin"));
        assert!(without.contains("io.bottle.pipelock=absent"));
    }
}
