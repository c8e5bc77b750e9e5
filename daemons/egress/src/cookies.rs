//! Cookies an origin issued, which the agent may send back to it.
//!
//! DLP refuses a random-looking cookie value (an agent can carry a secret out in one), but a
//! session id the site itself set is random by design. egress remembers (as keyed hashes,
//! never the values) the cookies each host set through it, and the agent's `Cookie` header
//! is judged without those.

use http::HeaderMap;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

/// Cookies remembered per host, at most.
const PER_HOST: usize = 256;
/// Hosts remembered, at most; past that the table starts again (the agent's cookies are then
/// judged in full, the safe side).
const HOSTS: usize = 256;

/// The cookies each host issued.
#[derive(Default)]
pub struct IssuedCookies {
    keys: RandomState,
    by_host: Mutex<HashMap<String, HashSet<u64>>>,
}

impl IssuedCookies {
    fn key(&self, host: &str, name: &str, value: &str) -> u64 {
        self.keys.hash_one((host, name.trim(), value.trim()))
    }

    /// Remember the cookies a response from `host` sets.
    pub fn remember(&self, host: &str, response: &HeaderMap) {
        let keys: Vec<u64> = response
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .map(|(n, v)| self.key(host, n, v))
            .collect();
        if keys.is_empty() {
            return;
        }
        let Ok(mut table) = self.by_host.lock() else {
            return;
        };
        if table.len() >= HOSTS && !table.contains_key(host) {
            table.clear();
        }
        let set = table.entry(host.to_string()).or_default();
        for k in keys {
            if set.len() >= PER_HOST {
                set.clear();
            }
            set.insert(k);
        }
    }

    /// The `Cookie` header the agent sent to `host`, without the pairs `host` issued.
    pub fn not_issued(&self, host: &str, cookie: &str) -> String {
        let Ok(table) = self.by_host.lock() else {
            return cookie.to_string();
        };
        let Some(set) = table.get(host) else {
            return cookie.to_string();
        };
        cookie
            .split(';')
            .filter(|pair| {
                pair.split_once('=')
                    .is_none_or(|(n, v)| !set.contains(&self.key(host, n, v)))
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_let_back_only_to_the_host_that_set_it_with_its_value() {
        let jar = IssuedCookies::default();
        let mut h = HeaderMap::new();
        h.append(
            http::header::SET_COOKIE,
            "sid=Zq81XvB2mK9pL4tR7wY3; Path=/; HttpOnly"
                .parse()
                .unwrap(),
        );
        jar.remember("a.test", &h);
        assert_eq!(
            jar.not_issued("a.test", "sid=Zq81XvB2mK9pL4tR7wY3; x=1"),
            " x=1"
        );
        assert_eq!(jar.not_issued("a.test", "sid=other"), "sid=other");
        assert_eq!(
            jar.not_issued("b.test", "sid=Zq81XvB2mK9pL4tR7wY3"),
            "sid=Zq81XvB2mK9pL4tR7wY3"
        );
    }
}
