//! What a request must show before MCP sees it: a `Host` supervise answers to (protection from
//! DNS rebinding, where a web page's script reaches a local server under a name of its own) and,
//! where the hop is authenticated ([`bottle_contract::hop`]), the hop token as a bearer.
//!
//! rmcp checks `Host` against a fixed list; this check also takes the address the connection
//! came in on, written as an IP literal: an agent outside Docker (smolmachines) reaches the
//! bundle container by its address, which is known only once the container runs. A rebinding
//! page names a host, never that literal.

use bottle_contract::hop::HopToken;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::http::{HeaderMap, Response, StatusCode, header, uri::Authority};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The checks, built once.
#[derive(Debug)]
pub struct Gate {
    /// Allowed `Host` values: host (lower case, no brackets) and, if given, port.
    names: Vec<(String, Option<u16>)>,
    hop: Option<HopToken>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Host`, or one supervise does not answer to.
    Host,
    /// The hop token is asked for and was not sent.
    Token,
}

/// `Host` split into a normalised host and its port.
fn authority(value: &str) -> Option<(String, Option<u16>)> {
    let a = Authority::try_from(value.trim()).ok()?;
    let host = a
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((host, a.port_u16()))
}

impl Gate {
    /// Answer to `allowed` (`name` or `name:port`) and, with `hop`, only to requests carrying it.
    pub fn new(allowed: &[String], hop: Option<HopToken>) -> Gate {
        Gate {
            names: allowed.iter().filter_map(|a| authority(a)).collect(),
            hop,
        }
    }

    /// Whether a request with `headers`, on a connection to `local`, may go on.
    pub fn check(&self, local: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        let (host, port) = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(authority)
            .ok_or(Refusal::Host)?;
        let by_name = self
            .names
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| Some(p) == port));
        let by_address = host.parse::<IpAddr>().is_ok_and(|ip| ip == local.ip())
            && port.is_none_or(|p| p == local.port());
        if !by_name && !by_address {
            return Err(Refusal::Host);
        }
        if let Some(token) = &self.hop {
            let carried = headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| token.matches_bearer(v.as_bytes()));
            if !carried {
                return Err(Refusal::Token);
            }
        }
        Ok(())
    }
}

/// The answer to a refused request: one line saying what to send.
pub fn refusal_response(refusal: Refusal) -> Response<BoxBody<Bytes, Infallible>> {
    use http_body_util::BodyExt as _;
    let (status, text) = match refusal {
        Refusal::Host => (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed (supervise answers to its own names and address)\n",
        ),
        Refusal::Token => (
            StatusCode::UNAUTHORIZED,
            "this supervise serves only its bottle's agent: send the bottle's hop token as `Authorization: Bearer` (the bottle's MCP config does)\n",
        ),
    };
    let mut response =
        Response::new(http_body_util::Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *response.status_mut() = status;
    if refusal == Refusal::Token {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_by_name_or_by_the_connections_own_address() {
        let gate = Gate::new(&["supervise".into(), "localhost:9100".into()], None);
        let local: SocketAddr = "172.30.0.2:9100".parse().unwrap();
        for ok in [
            "supervise",
            "SUPERVISE:9100",
            "localhost:9100",
            "172.30.0.2:9100",
            "172.30.0.2",
        ] {
            assert_eq!(gate.check(local, &headers(&[("host", ok)])), Ok(()), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost:80",
            "172.30.0.3:9100",
            "172.30.0.2:80",
            "127.0.0.1:9100",
            "",
        ] {
            assert_eq!(
                gate.check(local, &headers(&[("host", refused)])),
                Err(Refusal::Host),
                "{refused}"
            );
        }
        assert_eq!(gate.check(local, &HeaderMap::new()), Err(Refusal::Host));
        let v6 = Gate::new(&[], None);
        let local6: SocketAddr = "[fd00::2]:9100".parse().unwrap();
        assert_eq!(
            v6.check(local6, &headers(&[("host", "[fd00::2]:9100")])),
            Ok(())
        );
    }

    #[test]
    fn with_a_hop_token_the_bearer_must_be_it() {
        let gate = Gate::new(&["supervise".into()], Some(HopToken::new("t0k")));
        let local: SocketAddr = "172.30.0.2:9100".parse().unwrap();
        let with = |auth: &str| headers(&[("host", "supervise"), ("authorization", auth)]);
        assert_eq!(gate.check(local, &with("Bearer t0k")), Ok(()));
        assert_eq!(gate.check(local, &with("Bearer t0")), Err(Refusal::Token));
        assert_eq!(gate.check(local, &with("Basic t0k")), Err(Refusal::Token));
        assert_eq!(
            gate.check(local, &headers(&[("host", "supervise")])),
            Err(Refusal::Token)
        );
        // The Host check comes first: a rebinding page learns nothing of the token.
        assert_eq!(
            gate.check(
                local,
                &headers(&[("host", "evil"), ("authorization", "Bearer t0k")])
            ),
            Err(Refusal::Host)
        );
        assert_eq!(refusal_response(Refusal::Token).status(), 401);
        assert_eq!(refusal_response(Refusal::Host).status(), 403);
    }
}
