//! Each bottle's networks get small subnets of bottle's own address pool
//! ([`crate::config::NetworkSettings::pool`]), not Docker's default pools: those hand every
//! network a /16 or /20 out of about thirty, so some fifteen bottles (two networks each) used to
//! exhaust them for the whole host.
//!
//! A network is sized to what joins it ([`prefix_for`]). A subnet is taken only where nothing
//! else is: not another Docker network (bottle's or not), not a host route (`/proc/net/route`).
//! Two bottles starting at once may pick the same subnet; the engine refuses the second
//! ("overlaps"), which then looks again, starting at a random place so that racing runs seldom
//! meet twice.

use super::{DockerError, docker_message};
use bollard::Docker;
use bollard::query_parameters::ListNetworksOptions;
use bottle_contract::labels;
use ipnet::Ipv4Net;
use std::collections::BTreeSet;

/// How often a network whose subnet another run took first looks again.
pub const ATTEMPTS: usize = 12;

/// The prefix of a network `members` containers join: room for them, the gateway, the
/// network's and the broadcast address, at least a /29; an internal network (the agent's)
/// is a /28, so a probe or a second agent-side service fits.
pub fn prefix_for(members: usize, internal: bool) -> u8 {
    let needed = members + 3;
    let mut prefix: u8 = if internal { 28 } else { 29 };
    while prefix > 16 && (1usize << (32 - prefix)) < needed {
        prefix -= 1;
    }
    prefix
}

/// What holds addresses already: every Docker network's IPv4 subnets and every host route
/// but the default one.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Subnets in use.
    pub nets: Vec<Ipv4Net>,
    /// The slugs of bottles holding subnets of the pool (for the exhausted message).
    pub bottles: BTreeSet<String>,
    /// How many networks bottle keeps for the next bottles hold subnets of the pool idle
    /// ([`super::kept`]); counted by [`full`] only.
    pub idle_kept: usize,
    /// The kept networks on subnets of the pool (their bottles are their containers').
    pub kept: Vec<String>,
}

impl Taken {
    /// Read them now from the engine and the host.
    pub async fn read(docker: &Docker, pool: Ipv4Net) -> Result<Taken, DockerError> {
        let networks = docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(super::api("listing networks (for a free subnet)"))?;
        let mut taken = Taken::default();
        for n in networks {
            let subnets = subnets(&n);
            let in_pool = subnets.iter().any(|s| overlaps(*s, pool));
            let label = |k: &str| n.labels.as_ref().and_then(|l| l.get(k));
            if let Some(slug) = label(labels::SLUG)
                && in_pool
            {
                taken.bottles.insert(slug.clone());
            }
            if label(labels::ROLE).is_some_and(|r| r == super::kept::ROLE)
                && in_pool
                && let Some(name) = &n.name
            {
                taken.kept.push(name.clone());
            }
            taken.nets.extend(subnets);
        }
        taken.nets.extend(host_routes());
        Ok(taken)
    }

    /// A free subnet of `prefix` in `pool`, looking from block `start` on (wrapping).
    pub fn pick(&self, pool: Ipv4Net, prefix: u8, start: u64) -> Option<Ipv4Net> {
        if prefix < pool.prefix_len() || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - pool.prefix_len());
        let size = 1u64 << (32 - prefix);
        let base = u64::from(u32::from(pool.network()));
        (0..count)
            .map(|i| (start % count + i) % count)
            .filter_map(|i| {
                let addr = u32::try_from(base + i * size).ok()?;
                Ipv4Net::new(addr.into(), prefix).ok()
            })
            .find(|candidate| !self.nets.iter().any(|t| overlaps(*t, *candidate)))
    }
}

/// Network `n`'s IPv4 subnets.
pub fn subnets(n: &bollard::models::Network) -> Vec<Ipv4Net> {
    n.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref()?.parse().ok())
        .collect()
}

/// Whether two networks share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The host's routes but the default one, from `/proc/net/route` (none when it cannot be read).
pub fn host_routes() -> Vec<Ipv4Net> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_routes(&t))
        .unwrap_or_default()
}

/// `/proc/net/route`'s destinations and masks (little-endian hex), as networks.
fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            // The kernel prints each address's bytes as a native-endian number.
            let dest = std::net::Ipv4Addr::from(dest.to_ne_bytes());
            (prefix > 0)
                .then(|| Ipv4Net::new(dest, prefix).ok())
                .flatten()
                .map(|n| n.trunc())
        })
        .collect()
}

/// A random block index to start looking at, so that runs starting together spread out.
pub fn random_start() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}

/// Whether the engine refused a network because its subnet is someone else's.
pub fn is_overlap(e: &bollard::errors::Error) -> bool {
    let m = docker_message(e).to_ascii_lowercase();
    m.contains("overlap") || m.contains("address already in use")
}

/// [`exhausted`], with the bottles on the pool's kept networks and how many of them are idle
/// (of this keeper's: only those `bottle cleanup` removes) looked up first, as far as the
/// engine says.
pub async fn full(
    docker: &Docker,
    pool: Ipv4Net,
    prefix: u8,
    mut taken: Taken,
    config: &crate::config::BottleConfig,
) -> DockerError {
    // Idle ones have no container, so no bottle to name.
    let idle = super::kept::idle(docker).await.unwrap_or_default();
    for name in std::mem::take(&mut taken.kept) {
        if idle.contains(&name) {
            taken.idle_kept += 1;
        } else if let Ok(on) = super::kept::containers_on(docker, &name).await {
            taken.bottles.extend(
                on.iter()
                    .filter_map(|c| c.labels.as_ref()?.get(labels::SLUG).cloned()),
            );
        }
    }
    exhausted(pool, prefix, &taken, &config.where_to_set())
}

/// The pool has no free subnet of the size a network needs.
pub fn exhausted(pool: Ipv4Net, prefix: u8, taken: &Taken, where_to_set: &str) -> DockerError {
    DockerError::Host(format!(
        "bottle's address pool {pool} has no free /{prefix} left: {} bottle{} hold{} subnets of it{}{} and other networks or host routes may take the rest; stop the bottles you no longer need (`bottle ps`, `bottle stop SLUG`) or set a larger private range as `networks.pool` in {where_to_set}",
        taken.bottles.len(),
        if taken.bottles.len() == 1 { "" } else { "s" },
        if taken.bottles.len() == 1 { "s" } else { "" },
        if taken.bottles.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                taken.bottles.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        },
        match taken.idle_kept {
            0 => String::new(),
            n => format!(
                ", {n} idle network{} bottle keeps for the next bottles hold{} more (`bottle cleanup` removes {}),",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                if n == 1 { "it" } else { "them" },
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn networks_are_sized_to_what_joins_them() {
        assert_eq!(prefix_for(1, false), 29, "the bundle alone on its way out");
        assert_eq!(prefix_for(2, true), 28, "agent and bundle, with room");
        assert_eq!(prefix_for(5, false), 29);
        assert_eq!(prefix_for(6, false), 28);
        assert_eq!(prefix_for(14, true), 27);
    }

    #[test]
    fn a_free_block_is_picked_around_what_is_taken() {
        let pool = net("10.213.0.0/16");
        let taken = Taken {
            nets: vec![
                net("10.213.0.0/28"),
                net("10.213.0.16/29"),
                net("10.0.0.0/8"),
            ],
            ..Taken::default()
        };
        // Everything in the pool is under 10.0.0.0/8: nothing is free.
        assert_eq!(taken.pick(pool, 28, 0), None);
        let taken = Taken {
            nets: vec![net("10.213.0.0/28"), net("10.213.0.16/29")],
            ..Taken::default()
        };
        assert_eq!(taken.pick(pool, 28, 0), Some(net("10.213.0.32/28")));
        assert_eq!(taken.pick(pool, 29, 0), Some(net("10.213.0.24/29")));
        assert_eq!(
            taken.pick(pool, 28, 4096),
            Some(net("10.213.0.32/28")),
            "wraps"
        );
        assert_eq!(taken.pick(pool, 28, 4095), Some(net("10.213.255.240/28")));
        // A wider network holding a block from below counts too.
        let taken = Taken {
            nets: vec![net("10.213.0.0/24")],
            ..Taken::default()
        };
        assert_eq!(
            taken.pick(net("10.213.0.0/23"), 28, 0),
            Some(net("10.213.1.0/28"))
        );
    }

    #[test]
    fn a_tiny_pool_fills() {
        let pool = net("10.213.0.0/28");
        let empty = Taken::default();
        let first = empty.pick(pool, 28, 7).unwrap();
        assert_eq!(first, pool);
        let full = Taken {
            nets: vec![first],
            bottles: ["a-1".to_owned()].into(),
            ..Taken::default()
        };
        assert_eq!(full.pick(pool, 28, 0), None);
        let e = exhausted(pool, 28, &full, "/h/.config/bottle/config.yaml").to_string();
        assert!(
            e.contains("10.213.0.0/28 has no free /28 left: 1 bottle holds subnets of it (a-1)"),
            "{e}"
        );
        assert!(
            e.contains("`networks.pool` in /h/.config/bottle/config.yaml"),
            "{e}"
        );
        let kept = Taken {
            idle_kept: 2,
            ..full
        };
        let e = exhausted(pool, 28, &kept, "c").to_string();
        assert!(
            e.contains("(a-1), 2 idle networks bottle keeps for the next bottles hold more (`bottle cleanup` removes them), and other"),
            "{e}"
        );
    }

    #[test]
    fn host_routes_are_read_but_not_the_default_one() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_routes(text),
            vec![net("192.168.0.0/24"), net("172.17.0.0/16")]
        );
    }

    #[test]
    fn overlap_is_either_way() {
        assert!(overlaps(net("10.0.0.0/8"), net("10.213.0.0/28")));
        assert!(overlaps(net("10.213.0.0/28"), net("10.0.0.0/8")));
        assert!(!overlaps(net("10.213.0.0/28"), net("10.213.0.16/28")));
    }
}
