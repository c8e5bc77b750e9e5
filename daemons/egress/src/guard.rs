//! The SSRF guard: which addresses egress refuses to dial when it dials out itself.
//!
//! Without pipelock behind it, egress is the whole firewall: a route host that resolves to the
//! bundle's own loopback, the Docker host, a private network or the cloud metadata address
//! would hand the agent the inside. Names are resolved once and the checked address is the
//! one dialled, so a second lookup cannot rebind it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_refusal(v4);
            }
            v6_refusal(v6)
        }
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "an unspecified address",
        (127, _, _) => "loopback",
        (10, _, _) => "a private network (10/8)",
        (172, 16..=31, _) => "a private network (172.16/12)",
        (192, 168, _) => "a private network (192.168/16)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64/10)",
        (169, 254, _) => "link-local (169.254/16, cloud metadata)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240/4, broadcast)",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    Some(match seg[0] {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "a unique-local network (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xff00..=0xffff => "multicast",
        // NAT64 and 6to4 embed a v4 address the guard would otherwise not see.
        0x0064 if seg[1] == 0xff9b => return v4_refusal(embedded_v4(seg[6], seg[7])),
        0x2002 => return v4_refusal(embedded_v4(seg[1], seg[2])),
        _ if seg[0] == 0 && seg[1] == 0 && seg[2] == 0 && seg[3] == 0 && seg[4] == 0 => {
            "an IPv4-compatible or reserved address (::/80)"
        }
        _ => return None,
    })
}

/// The IPv4 address carried in two 16-bit segments.
fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_refused_and_public_ones_pass() {
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(refusal(ip).is_some(), "{refused} must be refused");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(refusal(ip), None, "{public}");
        }
    }
}
