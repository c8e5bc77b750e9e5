//! `egress.hosts` (and `routes.yaml`'s `hosts`): names egress sends to a fixed address, past
//! its SSRF guard, with the one port open there when given.
//!
//! `10.0.0.5` (every port of it, as for any allowed host), `10.0.0.5:5000`, `[fd00::5]:443`,
//! and `host-gateway:8443`: the Docker host, always with its port. The Docker host is the
//! user's own machine, where any service that listens on docker0's address or on all
//! addresses (and every container published with `-p`) would otherwise be the agent's.

use std::net::{IpAddr, SocketAddr};

/// Where a statically mapped name goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticAddress {
    /// This address.
    Ip(IpAddr),
    /// The engine's host-gateway address (docker0's by default), as `docker run --add-host
    /// NAME:host-gateway` means it.
    HostGateway,
}

/// One `hosts` entry, parsed: the address, and the only port open there when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticHost {
    /// Where the name goes.
    pub address: StaticAddress,
    /// The one port a request to the name may use; `None`: any.
    pub port: Option<u16>,
}

/// The word for the Docker host.
const HOST_GATEWAY: &str = "host-gateway";

impl std::str::FromStr for StaticHost {
    type Err = String;

    /// Parse an entry's value; the error says what to write instead.
    fn from_str(value: &str) -> Result<StaticHost, String> {
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{p:?} is not a port (1 to 65535)"))
        };
        if value == HOST_GATEWAY {
            return Err(format!(
                "`{HOST_GATEWAY}` alone would open every port of this machine to the agent: name the one the service listens on (`{HOST_GATEWAY}:8443`)"
            ));
        }
        if let Some(p) = value
            .strip_prefix(HOST_GATEWAY)
            .and_then(|r| r.strip_prefix(':'))
        {
            return Ok(StaticHost {
                address: StaticAddress::HostGateway,
                port: Some(port(p)?),
            });
        }
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(StaticHost {
                address: StaticAddress::Ip(ip),
                port: None,
            });
        }
        match value.parse::<SocketAddr>() {
            Ok(sa) if sa.port() > 0 => Ok(StaticHost {
                address: StaticAddress::Ip(sa.ip()),
                port: Some(sa.port()),
            }),
            _ => Err(format!(
                "{value:?} is not an address: give an IP (`10.0.0.5`, or `10.0.0.5:5000` to open that port alone), or `{HOST_GATEWAY}:PORT` for a service on the Docker host"
            )),
        }
    }
}

impl std::fmt::Display for StaticHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.address, self.port) {
            (StaticAddress::HostGateway, Some(p)) => write!(f, "{HOST_GATEWAY}:{p}"),
            (StaticAddress::HostGateway, None) => f.write_str(HOST_GATEWAY),
            (StaticAddress::Ip(ip), Some(p)) => write!(f, "{}", SocketAddr::new(ip, p)),
            (StaticAddress::Ip(ip), None) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StaticAddress, StaticHost};

    #[test]
    fn entries_parse_with_and_without_a_port_and_the_docker_host_needs_one() {
        let ok = |v: &str| v.parse::<StaticHost>().unwrap();
        assert_eq!(
            ok("host-gateway:8443"),
            StaticHost {
                address: StaticAddress::HostGateway,
                port: Some(8443)
            }
        );
        assert_eq!(ok("10.0.0.5").port, None);
        assert_eq!(ok("10.0.0.5:5000").port, Some(5000));
        assert_eq!(ok("[fd00::5]:443").port, Some(443));
        assert_eq!(ok("fd00::5").port, None);
        for v in [
            "host-gateway:8443",
            "10.0.0.5",
            "10.0.0.5:5000",
            "[fd00::5]:443",
            "fd00::5",
        ] {
            assert_eq!(ok(v).to_string(), v, "shown as written");
        }
        for (bad, why) in [
            ("host-gateway", "every port of this machine"),
            ("host-gateway:0", "not a port"),
            ("host-gateway:http", "not a port"),
            ("host-gateway:70000", "not a port"),
            ("10.0.0.5:0", "not an address"),
            ("nowhere", "not an address"),
            ("example.com:443", "not an address"),
        ] {
            let e = bad.parse::<StaticHost>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
