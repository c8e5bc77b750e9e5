//! One-off containers the host runs for itself: things only root can do to the files a
//! bottle leaves (the kernel's scratch entries of the agent's overlay, owned by root), and
//! files read out of an image (who a user named in it is).

use super::{DockerError, api};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bottle_contract::labels;
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::path::Path;

/// Empty `dir` (a dir of bottle's state) as root, in a container of `image` with no network
/// and nothing else mounted; the container is labelled with `slug`, so a teardown that is cut
/// short still finds it.
pub async fn empty_dir_as_root(
    docker: &Docker,
    slug: &str,
    image: &str,
    dir: &Path,
) -> Result<(), DockerError> {
    let name = format!("bottle-cleanup-{slug}");
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "rm -rf -- /w/* /w/.[!.]* /w/..?*".into(),
        ]),
        user: Some("0:0".into()),
        labels: Some(HashMap::from([(labels::SLUG.to_owned(), slug.to_owned())])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            // Removing another user's files takes these two; nothing else is kept.
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["DAC_OVERRIDE".into(), "FOWNER".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(true),
            mounts: Some(vec![Mount {
                target: Some("/w".into()),
                source: Some(dir.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Mount::default()
            }]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(api(format!("creating {name} from {image}")))?;
    let ran = async {
        docker
            .start_container(&name, None)
            .await
            .map_err(api(format!("starting {name}")))?;
        let mut wait =
            docker.wait_container(&name, Some(WaitContainerOptionsBuilder::default().build()));
        while let Some(r) = wait.next().await {
            match r {
                Ok(w) if w.status_code != 0 => {
                    return Err(DockerError::Host(format!(
                        "{name} could not empty {}: it exited with {}",
                        dir.display(),
                        w.status_code
                    )));
                }
                Ok(_) => {}
                // bollard reports a non-zero exit as an error too.
                Err(e) => return Err(api(format!("waiting for {name}"))(e)),
            }
        }
        Ok(())
    }
    .await;
    let removed = remove(docker, &name).await;
    ran.and(removed)
}

/// The largest file [`image_files`] reads: a passwd or group file is far smaller.
const IMAGE_FILE_MAX: usize = 1 << 20;

/// The contents of each of `paths` in `image` (`None` where the image has no regular file
/// there), read from a container made for it and never started; it is labelled with `slug`,
/// so a teardown that is cut short still finds it.
pub async fn image_files(
    docker: &Docker,
    slug: &str,
    image: &str,
    paths: &[&str],
) -> Result<Vec<Option<Vec<u8>>>, DockerError> {
    use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
    let name = format!("bottle-users-{slug}");
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        // Never run: the engine only needs a command to make the container.
        entrypoint: Some(vec!["/nonexistent".into()]),
        labels: Some(HashMap::from([(labels::SLUG.to_owned(), slug.to_owned())])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(api(format!("creating {name} from {image}")))?;
    let mut read = Vec::new();
    for path in paths {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = docker.download_from_container(&name, Some(opts));
        let mut tar = Vec::new();
        let mut missing = false;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) if tar.len() + b.len() <= IMAGE_FILE_MAX + 4096 => tar.extend_from_slice(&b),
                Ok(_) => {
                    missing = true;
                    break;
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    missing = true;
                    break;
                }
                Err(e) => {
                    let _ = remove(docker, &name).await;
                    return Err(api(format!("reading {path} from {image}"))(e));
                }
            }
        }
        read.push(if missing {
            None
        } else {
            first_regular_file(&tar)
        });
    }
    remove(docker, &name).await?;
    Ok(read)
}

/// The first entry of tar archive `tar`, when it is a regular file.
fn first_regular_file(tar: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    if entry.header().entry_type() != tar::EntryType::Regular {
        return None;
    }
    let mut out = Vec::new();
    entry
        .by_ref()
        .take(IMAGE_FILE_MAX as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// Remove container `name`, whatever its state.
async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .map_err(api(format!("removing {name}")))
}
