//! The agent's internal network outlives its bottle, kept for the next one: made and removed
//! for each bottle, it put two engine calls on every run's critical path (on a 2-core VM with
//! Docker 20.10, ~40 ms to make it before anything starts and ~100 ms to remove it after
//! everything else of the teardown).
//!
//! A kept network is the internal bridge a bottle would have made, named for no bottle
//! (`bottle-internal-<random>`) and labelled [`ROLE`] and with its keeper (this user on this
//! machine, [`KEEPER`]). A run takes one only when the network is alike (the same driver
//! options, a subnet of the run's own pool at least as large as it needs, clear of the host's
//! routes), when it holds the network's lock file (in `/tmp`, whatever `TMPDIR` says, so every
//! run of the keeper's on this machine looks at the same file; held by the process until its
//! teardown has removed every container) and when no container is on it, running or not (a
//! run killed before its teardown leaves its containers). The engine has the last word: once
//! its containers are made, a run refuses to start when a container of another bottle is on
//! its network too ([`only_ours`]), so a lock that failed to exclude (another `/tmp`, a lock
//! file removed under its holder) costs a run, never the isolation. Nothing of a bottle lives
//! on in the network once its containers are gone: addresses, names and aliases are the
//! containers' endpoints, and an internal bridge without a host address holds no other state.
//!
//! At most [`KEEP_IDLE`] of a keeper's are kept idle in a pool; `bottle cleanup` removes the
//! idle ones.

use super::{DockerError, api, gone_is_done, pool};
use bollard::Docker;
use bollard::models::{ContainerSummary, Network};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use bottle_contract::labels;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The [`labels::ROLE`] of a kept network.
pub const ROLE: &str = "kept-internal";

/// The label naming a kept network's keeper, `<uid>@<machine id>`: only its keeper's runs take
/// it, since only they share its lock files.
pub const KEEPER: &str = "io.bottle.keeper";

/// How many idle networks of a pool a keeper's teardowns leave; more are removed.
pub const KEEP_IDLE: usize = 2;

/// The kept networks this process holds, each for the bottle whose run took it.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// A kept network a run holds: its name and its lock.
#[derive(Debug)]
pub struct Held {
    /// The bottle it is held for.
    slug: String,
    /// The network's name.
    pub name: String,
    /// The address pool it is (or is to be) on: the idle ones a teardown counts are those the
    /// next run with this pool could take.
    pool: Ipv4Net,
    _lock: File,
}

/// What a run wants of its internal network, to take a kept one for it.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// The smallest subnet that fits it (a kept one may be larger).
    pub prefix: u8,
    /// Its driver options, exactly.
    pub options: &'a HashMap<String, String>,
    /// The run's address pool: a kept network elsewhere is not taken.
    pub pool: Ipv4Net,
}

/// This user on this machine: `<uid>@<machine id>` (the hostname where there is no
/// `/etc/machine-id`).
pub fn keeper() -> &'static str {
    static KEEPER_ID: OnceLock<String> = OnceLock::new();
    KEEPER_ID.get_or_init(|| {
        let machine = ["/etc/machine-id", "/proc/sys/kernel/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|m| m.trim().to_owned())
            .find(|m| !m.is_empty())
            .unwrap_or_default();
        format!("{}@{machine}", rustix::process::getuid().as_raw())
    })
}

/// The labels a kept network is made with.
pub fn make_labels() -> HashMap<String, String> {
    HashMap::from([
        (labels::ROLE.to_owned(), ROLE.to_owned()),
        (KEEPER.to_owned(), keeper().to_owned()),
    ])
}

/// The lock file of kept network `name`.
fn lock_path(name: &str) -> PathBuf {
    PathBuf::from("/tmp").join(format!("{name}.lock"))
}

/// The lock of kept network `name`, when nobody holds it (another bottle of this process
/// included: a lock is its open file's). A file unlinked while this run waited for it (its
/// network removed) is not the lock any more.
fn try_lock(name: &str) -> Option<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = lock_path(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    let (held, named) = (
        file.metadata().ok()?,
        std::fs::symlink_metadata(&path).ok()?,
    );
    (held.dev() == named.dev() && held.ino() == named.ino()).then_some(file)
}

/// A new kept network's name for bottle `slug`, on a subnet of `pool`, locked before the
/// network is made (another run that lists it then finds it held).
pub fn fresh(pool: Ipv4Net, slug: &str) -> Option<Held> {
    let name = format!("bottle-internal-{:016x}", pool::random_start());
    let lock = try_lock(&name)?;
    Some(Held {
        slug: slug.to_owned(),
        name,
        pool,
        _lock: lock,
    })
}

/// The names of the kept networks this user has lock files of.
fn lock_files() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.uid() == uid))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let network = name.strip_suffix(".lock")?;
            network
                .starts_with("bottle-internal-")
                .then(|| network.to_owned())
        })
        .collect()
}

/// The keeper's kept networks, as the engine lists them.
async fn listed(docker: &Docker) -> Result<Vec<Network>, DockerError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{}={ROLE}", labels::ROLE),
            format!("{KEEPER}={}", keeper()),
        ],
    )]);
    let opts = ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_networks(Some(opts)).await.map_err(api(
        "listing the networks bottle keeps for the next bottles",
    ))
}

/// The containers on network `name`, running or not (a stopped one rejoins it when started).
pub async fn containers_on(
    docker: &Docker,
    name: &str,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let filters = HashMap::from([("network", vec![name])]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(api(format!("listing the containers on network {name}")))
}

/// Kept network `name`'s lock, when no run holds it and no container is on it.
async fn lock_if_idle(docker: &Docker, name: &str) -> Result<Option<File>, DockerError> {
    let Some(lock) = try_lock(name) else {
        return Ok(None);
    };
    Ok(containers_on(docker, name)
        .await?
        .is_empty()
        .then_some(lock))
}

/// Whether kept network `n` is alike what `wanted` asks, its subnet clear of `routes` (a
/// route the host gained since, a VPN's, would be shadowed inside the bundle).
fn alike(n: &Network, wanted: &Wanted<'_>, routes: &[Ipv4Net]) -> bool {
    n.driver.as_deref() == Some("bridge")
        && n.internal == Some(true)
        && n.enable_ipv6 != Some(true)
        && n.options.as_ref() == Some(wanted.options)
        && matches!(pool::subnets(n).as_slice(), [s] if s.prefix_len() <= wanted.prefix
            && wanted.pool.contains(s)
            && !routes.iter().any(|r| pool::overlaps(*r, *s)))
}

/// A kept network alike `wanted`, idle and now held for bottle `slug`, if the keeper has one.
pub async fn take(
    docker: &Docker,
    wanted: &Wanted<'_>,
    slug: &str,
) -> Result<Option<Held>, DockerError> {
    let routes = pool::host_routes();
    for n in listed(docker).await? {
        let Some(name) = n.name.as_deref() else {
            continue;
        };
        if !alike(&n, wanted, &routes) {
            continue;
        }
        if let Some(lock) = lock_if_idle(docker, name).await? {
            return Ok(Some(Held {
                slug: slug.to_owned(),
                name: name.to_owned(),
                pool: wanted.pool,
                _lock: lock,
            }));
        }
    }
    Ok(None)
}

/// Hold `held` until its bottle's teardown ([`release`]).
pub fn hold(held: Held) {
    HELD.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(held);
}

/// Refuse to start bottle `slug` when a container of another bottle is on its kept network
/// `name` (see the module's docs: the locks failed to keep the network to one bottle).
pub async fn only_ours(docker: &Docker, name: &str, slug: &str) -> Result<(), DockerError> {
    let on = containers_on(docker, name).await?;
    let other = on.iter().find(|c| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(labels::SLUG))
            .is_none_or(|s| s != slug)
    });
    match other {
        None => Ok(()),
        Some(c) => Err(DockerError::Host(format!(
            "network {name}, which bottle keeps for one bottle at a time, has another container on it ({}); nothing was started: run again (a new network is made), and `bottle cleanup` removes what a killed run left",
            c.names
                .as_ref()
                .and_then(|n| n.first())
                .map_or("unnamed", |n| n.trim_start_matches('/'))
        ))),
    }
}

/// At bottle `slug`'s teardown, once no container of it can land on them: each kept network it
/// held is left for the next bottle, and the idle ones of its pool beyond [`KEEP_IDLE`]
/// removed; then let go. Best effort: what fails is a warning naming `bottle cleanup`, never
/// the run's failure (the bottle is gone; only the cache of networks is not as it should be).
pub async fn release(docker: &Docker, slug: &str) {
    let mine: Vec<Held> = {
        let mut all = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let (mine, others) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|h| h.slug == slug);
        *all = others;
        mine
    };
    for held in mine {
        if let Err(e) = let_go(docker, &held).await {
            eprintln!(
                "warning: bottle {slug}: the network kept for the next bottle: {e}; `bottle cleanup` removes idle ones"
            );
        }
    }
}

/// [`release`] of one held network.
async fn let_go(docker: &Docker, held: &Held) -> Result<(), DockerError> {
    let list = listed(docker).await?;
    if !list.iter().any(|n| n.name.as_deref() == Some(&held.name)) {
        // Never made (its bring-up failed first): only its lock file is left.
        let _ = std::fs::remove_file(lock_path(&held.name));
        return Ok(());
    }
    // The others of its pool idle now, held while this run decides (a run that wants one
    // meanwhile makes its own).
    let mut idle = Vec::new();
    for n in &list {
        let Some(name) = n.name.as_deref() else {
            continue;
        };
        if name == held.name || !pool::subnets(n).iter().any(|s| held.pool.contains(s)) {
            continue;
        }
        if let Some(lock) = lock_if_idle(docker, name).await? {
            idle.push((name, lock));
        }
    }
    // This one is idle too, and stays: with it, KEEP_IDLE.
    for (name, _lock) in idle.iter().skip(KEEP_IDLE - 1) {
        remove(docker, name).await?;
    }
    Ok(())
}

/// Remove kept network `name` (gone already is done) and its lock file; the caller holds the
/// lock.
async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    gone_is_done(docker.remove_network(name).await).map_err(api(format!(
        "removing network {name} (kept for the next bottles)"
    )))?;
    let _ = std::fs::remove_file(lock_path(name));
    Ok(())
}

/// The keeper's idle kept networks: no run holds them and no container is on them.
pub async fn idle(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let mut idle = Vec::new();
    for name in listed(docker)
        .await?
        .iter()
        .filter_map(|n| n.name.as_deref())
    {
        if lock_if_idle(docker, name).await?.is_some() {
            idle.push(name.to_owned());
        }
    }
    idle.sort();
    Ok(idle)
}

/// `bottle cleanup`: remove the keeper's idle kept networks; returns their names and what
/// failed.
pub async fn remove_idle(docker: &Docker) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let list = match listed(docker).await {
        Ok(list) => list,
        Err(e) => return (removed, vec![e.to_string()]),
    };
    // Lock files whose network is gone (removed outside bottle): nothing is kept there.
    let names: Vec<&str> = list.iter().filter_map(|n| n.name.as_deref()).collect();
    for stale in lock_files()
        .into_iter()
        .filter(|name| !names.contains(&name.as_str()))
    {
        if let Some(_lock) = try_lock(&stale) {
            let _ = std::fs::remove_file(lock_path(&stale));
        }
    }
    for name in list.iter().filter_map(|n| n.name.as_deref()) {
        let removal = match lock_if_idle(docker, name).await {
            Ok(Some(_lock)) => remove(docker, name).await,
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        match removal {
            Ok(()) => removed.push(name.to_owned()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (removed, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Ipam, IpamConfig};

    fn network(subnet: &str, options: &[(&str, &str)]) -> Network {
        Network {
            name: Some("bottle-internal-0".into()),
            driver: Some("bridge".into()),
            internal: Some(true),
            options: Some(
                options
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.into()),
                    ..IpamConfig::default()
                }]),
                ..Ipam::default()
            }),
            ..Network::default()
        }
    }

    #[test]
    fn only_a_network_alike_what_the_run_wants_is_taken() {
        let opts = [("com.docker.network.bridge.inhibit_ipv4", "true")];
        let options: HashMap<String, String> = opts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let wanted = Wanted {
            prefix: 28,
            options: &options,
            pool: "10.213.0.0/16".parse().unwrap(),
        };
        assert!(alike(&network("10.213.0.16/28", &opts), &wanted, &[]));
        assert!(
            alike(&network("10.213.0.0/27", &opts), &wanted, &[]),
            "a larger one"
        );
        assert!(
            !alike(&network("10.213.0.16/29", &opts), &wanted, &[]),
            "too small"
        );
        assert!(
            !alike(&network("10.214.0.16/28", &opts), &wanted, &[]),
            "another pool's"
        );
        assert!(
            !alike(
                &network("10.213.0.16/28", &opts),
                &wanted,
                &["10.213.0.0/24".parse().unwrap()]
            ),
            "under a host route made since"
        );
        assert!(
            !alike(&network("10.213.0.16/28", &[]), &wanted, &[]),
            "other options: a host address on the bridge"
        );
        let mut routed = network("10.213.0.16/28", &opts);
        routed.internal = Some(false);
        assert!(!alike(&routed, &wanted, &[]), "not internal");
        let mut v6 = network("10.213.0.16/28", &opts);
        v6.enable_ipv6 = Some(true);
        assert!(!alike(&v6, &wanted, &[]), "IPv6");
    }

    #[test]
    fn a_kept_network_is_held_once() {
        let held = fresh("10.213.0.0/16".parse().unwrap(), "a").expect("a lock in /tmp");
        assert!(held.name.starts_with("bottle-internal-"));
        assert!(try_lock(&held.name).is_none(), "held by its first taker");
        let name = held.name.clone();
        drop(held);
        let again = try_lock(&name).expect("free once let go");
        // Its network removed, its file with it: a lock on the old file is no lock.
        std::fs::remove_file(lock_path(&name)).unwrap();
        drop(again);
        let reopened = try_lock(&name).expect("a new file");
        drop(reopened);
        let _ = std::fs::remove_file(lock_path(&name));
    }
}
