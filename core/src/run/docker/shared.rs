//! The way out every bottle's bundle shares ([`SHARED_EGRESS_NETWORK`]): one bridge, made the
//! first time a bottle needs it and kept, so a bottle's bring-up and teardown make and remove
//! one network less. Containers on it cannot reach each other ([`SHARED_EGRESS_OPTS`]): no
//! bundle reaches another's daemons, as when each bundle had a bridge of its own. Its subnet is
//! the engine's choice, like `docker0`'s: it is one network for every bottle and every user, so
//! no user's address pool ([`super::pool`]) decides it.
//!
//! Two runs must not both make it: an engine before Docker 25 lets two networks share a name
//! (it checks only when a request asks, and the API client here cannot ask), and a newer one
//! refuses the second. Runs on one machine take turns under a lock file; runs on other
//! machines (a remote engine) may still meet, so a refused make looks again, and when two of
//! the name exist every run takes the one with the least id and a run whose own is not that
//! one removes its own. Containers join it by id.

use super::{DockerError, api};
use bollard::Docker;
use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use bottle_contract::compose::{SHARED_EGRESS_NETWORK, SHARED_EGRESS_OPTS};
use bottle_contract::labels;
use std::collections::HashMap;

/// The [`labels::ROLE`] that marks the shared way out as bottle's own.
pub const ROLE: &str = "shared-egress";

/// The lock file runs on this machine take turns under to make the shared way out.
const LOCK_FILE: &str = "bottle-shared-egress.lock";

/// How long a run waits for the lock before it goes on without it (a run that hangs holding
/// it must not hang the others).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The lock on this machine's turn to make the shared way out, held until dropped; none when
/// it cannot be had (another user's file, or held for [`LOCK_WAIT`]): the engine's own checks
/// below still hold then.
async fn turn() -> Option<std::fs::File> {
    tokio::task::spawn_blocking(|| {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(LOCK_FILE);
        let mut open = std::fs::OpenOptions::new();
        open.read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        // Made readable by all (a lock works on a read-only file): another user's run opens
        // the same one.
        let file = open
            .clone()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .or_else(|_| open.open(&path))
            .ok()?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(file),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// The shared way out's driver options ([`SHARED_EGRESS_OPTS`]), as the engine takes them.
fn options() -> HashMap<String, String> {
    SHARED_EGRESS_OPTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The label that marks the shared way out as bottle's.
fn role_label() -> HashMap<String, String> {
    HashMap::from([(labels::ROLE.to_owned(), ROLE.to_owned())])
}

/// The shared way out's id; made now when the engine has none.
pub async fn ensure(docker: &Docker) -> Result<String, DockerError> {
    if let Some(id) = first(docker).await? {
        return Ok(id);
    }
    let _turn = turn().await;
    // Another run may have made it while this one waited for its turn.
    if let Some(id) = first(docker).await? {
        return Ok(id);
    }
    let made = docker
        .create_network(NetworkCreateRequest {
            name: SHARED_EGRESS_NETWORK.to_owned(),
            driver: Some("bridge".to_owned()),
            internal: Some(false),
            options: Some(options()),
            labels: Some(role_label()),
            ..NetworkCreateRequest::default()
        })
        .await;
    let made = match made {
        Ok(made) => made.id,
        // A newer engine refuses a second network of the name: another machine's run made it.
        Err(e) => {
            return first(docker)
                .await?
                .ok_or_else(|| api(format!("creating network {SHARED_EGRESS_NETWORK}"))(e));
        }
    };
    let winner = first(docker).await?.unwrap_or_else(|| made.clone());
    if winner != made {
        // An older engine let another machine's run make one too, and every run takes the
        // least id. The engine refuses to remove ours if a container joined it meanwhile.
        let _ = docker.remove_network(&made).await;
    }
    Ok(winner)
}

/// The least id of the networks named [`SHARED_EGRESS_NETWORK`], checked to be bottle's.
async fn first(docker: &Docker) -> Result<Option<String>, DockerError> {
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
    same.sort_by(|a, b| a.id.cmp(&b.id));
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
            options: Some(options()),
            labels: Some(role_label()),
            ..Network::default()
        };
        edit(&mut n);
        n
    }

    #[tokio::test]
    async fn a_turn_holds_the_lock_until_dropped() {
        let held = turn().await.expect("the lock");
        let other = std::fs::File::open(std::env::temp_dir().join(LOCK_FILE)).unwrap();
        let try_lock =
            || rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        assert!(try_lock().is_err(), "another run got the turn too");
        drop(held);
        assert!(try_lock().is_ok(), "the turn outlived its holder");
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
