//! One-off containers the host runs for itself: things only root can do to the files a
//! bottle leaves (the kernel's scratch entries of the agent's overlay, owned by root).

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
    let removed = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .map_err(api(format!("removing {name}")));
    ran.and(removed)
}
