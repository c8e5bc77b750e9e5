//! What bottle has running on this engine, found by label.

use super::{DockerError, api};
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use bottle_contract::labels;
use std::collections::HashMap;

/// A bottle container.
#[derive(Debug, Clone)]
pub struct BottleContainer {
    /// Container name (without `/`).
    pub name: String,
    /// The bottle's slug.
    pub slug: String,
    /// Agent name.
    pub agent: String,
    /// `agent`, `sidecars`, `service`.
    pub role: String,
    /// Docker's state (`running`, `exited`…).
    pub state: String,
    /// Creation time, Unix seconds.
    pub created: i64,
}

fn label_filter(value: Option<&str>) -> HashMap<String, Vec<String>> {
    let f = match value {
        Some(slug) => format!("{}={slug}", labels::SLUG),
        None => labels::SLUG.to_owned(),
    };
    HashMap::from([("label".to_owned(), vec![f])])
}

/// Every bottle container (running or not), or those of one slug.
pub async fn containers(
    docker: &Docker,
    slug: Option<&str>,
) -> Result<Vec<BottleContainer>, DockerError> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&label_filter(slug))
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(api("listing containers"))?;
    let mut out: Vec<BottleContainer> = list
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            BottleContainer {
                name: c
                    .names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                slug: get(labels::SLUG),
                agent: get(labels::AGENT),
                role: get(labels::ROLE),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                created: c.created.unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.slug, &a.name).cmp(&(&b.slug, &b.name)));
    Ok(out)
}

/// Names of every bottle network, or those of one slug.
pub async fn networks(docker: &Docker, slug: Option<&str>) -> Result<Vec<String>, DockerError> {
    let opts = ListNetworksOptionsBuilder::default()
        .filters(&label_filter(slug))
        .build();
    let list = docker
        .list_networks(Some(opts))
        .await
        .map_err(api("listing networks"))?;
    let mut names: Vec<String> = list.into_iter().filter_map(|n| n.name).collect();
    names.sort();
    Ok(names)
}

/// Names of every bottle volume, or those of one slug.
pub async fn volumes(docker: &Docker, slug: Option<&str>) -> Result<Vec<String>, DockerError> {
    let opts = ListVolumesOptionsBuilder::default()
        .filters(&label_filter(slug))
        .build();
    let list = docker
        .list_volumes(Some(opts))
        .await
        .map_err(api("listing volumes"))?;
    let mut names: Vec<String> = list
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    Ok(names)
}

/// Whether a container called `name` exists.
pub async fn container_exists(docker: &Docker, name: &str) -> Result<bool, DockerError> {
    match docker.inspect_container(name, None).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(api(format!("looking for container {name}"))(e)),
    }
}
