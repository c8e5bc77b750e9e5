//! The way out every bottle's bundle shares ([`SHARED_EGRESS_NETWORK`]): one bridge, made the
//! first time a bottle needs it and kept, so a bottle's bring-up and teardown make and remove
//! one network less. Containers on it cannot reach each other ([`SHARED_EGRESS_OPTS`]): no
//! bundle reaches another's daemons, as when each bundle had a bridge of its own. Its subnet is
//! the engine's choice, like `docker0`'s: it is one network for every bottle and every user, so
//! no user's address pool ([`super::pool`]) decides it.
//!
//! The engine lets two networks share a name (it checks only when a request asks, and the API
//! client here cannot ask), so two runs making it at once can both succeed. Every run then takes
//! the oldest (ties by id) and a run whose own is not that one removes its own: they agree
//! without a lock, and containers join it by id.

use super::{DockerError, api};
use bollard::Docker;
use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bottle_contract::compose::{SHARED_EGRESS_NETWORK, SHARED_EGRESS_OPTS};
use bottle_contract::labels;
use std::collections::HashMap;

/// The [`labels::ROLE`] that marks the shared way out as bottle's own.
pub const ROLE: &str = "shared-egress";

/// The shared way out's id; made now when the engine has none.
pub async fn ensure(docker: &Docker) -> Result<String, DockerError> {
    if let Some(id) = oldest(docker).await? {
        return Ok(id);
    }
    let made = docker
        .create_network(NetworkCreateRequest {
            name: SHARED_EGRESS_NETWORK.to_owned(),
            driver: Some("bridge".to_owned()),
            internal: Some(false),
            options: Some(
                SHARED_EGRESS_OPTS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            labels: Some(HashMap::from([(labels::ROLE.to_owned(), ROLE.to_owned())])),
            ..NetworkCreateRequest::default()
        })
        .await
        .map_err(api(format!("creating network {SHARED_EGRESS_NETWORK}")))?
        .id;
    let winner = oldest(docker).await?.unwrap_or_else(|| made.clone());
    if winner != made {
        // Another run made one at the same time and its is older. Nothing joined ours yet:
        // every run joins the oldest.
        let _ = docker.remove_network(&made).await;
    }
    Ok(winner)
}

/// The id of the oldest network named [`SHARED_EGRESS_NETWORK`], checked to be bottle's.
async fn oldest(docker: &Docker) -> Result<Option<String>, DockerError> {
    let opts = ListNetworksOptionsBuilder::default()
        .filters(&HashMap::from([("name", vec![SHARED_EGRESS_NETWORK])]))
        .build();
    let listed = docker.list_networks(Some(opts)).await.map_err(api(format!(
        "listing networks (for {SHARED_EGRESS_NETWORK})"
    )))?;
    // The engine's filter matches part of a name.
    let mut same: Vec<Network> = listed
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(SHARED_EGRESS_NETWORK))
        .collect();
    let age = |n: &Network| (n.created.as_ref().map(ToString::to_string), n.id.clone());
    same.sort_by_key(age);
    let Some(first) = same.first() else {
        return Ok(None);
    };
    check(first).map_err(|why| {
        DockerError::Host(format!(
            "the engine's network {SHARED_EGRESS_NETWORK} is not the one bottle makes as its bundles' shared way out ({why}); remove it (`docker network rm {SHARED_EGRESS_NETWORK}`) and bottle makes it again"
        ))
    })?;
    Ok(first.id.clone())
}

/// Why `n` is not bottle's shared way out, if it is not.
fn check(n: &Network) -> Result<(), String> {
    let driver = n.driver.as_deref().unwrap_or("");
    if driver != "bridge" {
        return Err(format!("its driver is `{driver}`, not `bridge`"));
    }
    if n.internal == Some(true) {
        return Err("it is internal: it has no way out".to_owned());
    }
    let options = n.options.clone().unwrap_or_default();
    for (k, v) in SHARED_EGRESS_OPTS {
        if options.get(k).map(String::as_str) != Some(v) {
            return Err(format!("it lacks the option {k}={v}"));
        }
    }
    let role = n.labels.as_ref().and_then(|l| l.get(labels::ROLE));
    if role.map(String::as_str) != Some(ROLE) {
        return Err(format!("it lacks the label {}={ROLE}", labels::ROLE));
    }
    if n.id.is_none() {
        return Err("the engine gave no id for it".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(edit: impl FnOnce(&mut Network)) -> Network {
        let mut n = Network {
            id: Some("abc".into()),
            name: Some(SHARED_EGRESS_NETWORK.into()),
            driver: Some("bridge".into()),
            internal: Some(false),
            options: Some(
                SHARED_EGRESS_OPTS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            labels: Some(HashMap::from([(labels::ROLE.to_owned(), ROLE.to_owned())])),
            ..Network::default()
        };
        edit(&mut n);
        n
    }

    #[test]
    fn only_a_bridge_with_a_way_out_whose_members_cannot_meet_is_taken() {
        assert_eq!(check(&network(|_| {})), Ok(()));
        let refused = [
            network(|n| n.driver = Some("macvlan".into())),
            network(|n| n.internal = Some(true)),
            network(|n| n.options = None),
            network(|n| {
                n.options = Some(HashMap::from([(
                    SHARED_EGRESS_OPTS[0].0.to_owned(),
                    "true".to_owned(),
                )]));
            }),
            network(|n| n.labels = None),
            network(|n| n.id = None),
        ];
        for n in refused {
            assert!(check(&n).is_err(), "{n:?}");
        }
    }
}
