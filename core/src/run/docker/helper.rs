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
/// and nothing else mounted ([`create`]).
pub async fn empty_dir_as_root(
    docker: &Docker,
    slug: &str,
    image: &str,
    dir: &Path,
) -> Result<(), DockerError> {
    let name = format!("bottle-cleanup-{slug}");
    let body = ContainerCreateBody {
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "rm -rf -- /w/* /w/.[!.]* /w/..?*".into(),
        ]),
        user: Some("0:0".into()),
        host_config: Some(HostConfig {
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
    create(docker, slug, &name, image, body).await?;
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

/// Make one-off container `name` of `image`, as `body` says, with no network and labelled
/// with `slug`: a teardown that is cut short still finds it.
async fn create(
    docker: &Docker,
    slug: &str,
    name: &str,
    image: &str,
    mut body: ContainerCreateBody,
) -> Result<(), DockerError> {
    body.image = Some(image.to_owned());
    body.labels = Some(HashMap::from([(labels::SLUG.to_owned(), slug.to_owned())]));
    body.network_disabled = Some(true);
    let mut host = body.host_config.take().unwrap_or_default();
    host.network_mode = Some("none".into());
    body.host_config = Some(host);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .map_err(api(format!("creating {name} from {image}")))?;
    Ok(())
}

/// The largest file [`image_files`] reads: a passwd or group file is far smaller.
const IMAGE_FILE_MAX: usize = 1 << 20;

/// The contents of each of `paths` in `image` (`None` where the image has no regular file
/// there), read from a container made for it ([`create`]) and never started.
pub async fn image_files(
    docker: &Docker,
    slug: &str,
    image: &str,
    paths: &[&str],
) -> Result<Vec<Option<Vec<u8>>>, DockerError> {
    use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
    let name = format!("bottle-users-{slug}");
    let body = ContainerCreateBody {
        // Never run: the engine only needs a command to make the container.
        entrypoint: Some(vec!["/nonexistent".into()]),
        ..ContainerCreateBody::default()
    };
    create(docker, slug, &name, image, body).await?;
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
