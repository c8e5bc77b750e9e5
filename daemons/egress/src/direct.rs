//! Clients that ignore the proxy env: the JVM, Node's `fetch`, Go programs with their own
//! transport, `curl --noproxy '*'`. They get out the allowed way too:
//!
//! - [`Resolver`]: the agent's only DNS server. It answers a name some route allows with
//!   egress's own address (the one the agent asked on) and nothing else; every other name does
//!   not exist. It never forwards a query anywhere, so a name can carry nothing out.
//! - the agent's client then speaks TLS to egress's port 443 (routed by the name it sent,
//!   SNI) or HTTP to port 80 (routed by `Host`), and from there it is the same pipeline as the
//!   proxy's: route table, interception, credential injection, DLP, SSRF guard
//!   ([`crate::proxy::Proxy::serve_direct_tls`], [`crate::proxy::Proxy::serve_direct_http`]).
//!
//! These ports carry no hop token (the client knows no proxy), so they serve the agent's
//! address alone ([`AgentPeer`]): the bundle's other address, on the bridge the host shares,
//! is reachable by any local process, which must not get a credential injected.

use crate::proxy::Proxy;
use crate::routes::RouteTable;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an answer may be cached: short, so a host approved or revoked live is seen soon.
const ANSWER_TTL: u32 = 5;
/// The largest DNS message read over UDP.
const MAX_QUERY: usize = 4096;
/// How often, at most, the agent's name is looked up again when an unknown peer knocks.
const PEER_REFRESH: Duration = Duration::from_secs(1);
/// Queries from askers not yet known to be the agent that may wait for a lookup at once.
const JUDGED_AT_ONCE: usize = 16;
/// How long one lookup of the agent's name may take.
const PEER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Which peer the direct ports serve: the address(es) the bundle's own resolver gives for the
/// agent's name on the bottle's internal network (Docker's embedded DNS), looked up again at
/// most once a second when another peer knocks (the agent may start after egress).
pub struct AgentPeer {
    name: String,
    known: Mutex<(Vec<IpAddr>, Option<Instant>)>,
    /// Held while the name is looked up: one lookup at a time, whoever knocks meanwhile
    /// takes its result.
    lookup: tokio::sync::Mutex<()>,
    /// How the name is looked up: the system's resolver (a test's slow one stands in for a
    /// resolver that does not answer).
    resolve: Resolve,
    /// Every peer is the agent: the socket is in the agent's own network namespace
    /// ([`bottle_contract::handoff`]), where nothing else can connect.
    everyone: bool,
}

/// A lookup of a name's addresses.
type Resolve = Box<
    dyn Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Vec<IpAddr>> + Send>> + Send + Sync,
>;

impl std::fmt::Debug for AgentPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPeer")
            .field("name", &self.name)
            .finish()
    }
}

impl AgentPeer {
    /// Serve the peer(s) `name` resolves to. A name of one label is looked up as it stands
    /// (`agent.`): tried under the search domains first, as a resolver does with a short name,
    /// the host's own DNS could answer for `agent.<its domain>` with an address of its choosing.
    pub fn new(name: &str) -> AgentPeer {
        let name = if name.contains('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        Self::resolved_by(
            &name,
            Box::new(|name| {
                Box::pin(async move {
                    match tokio::net::lookup_host((name.as_str(), 0)).await {
                        Ok(a) => a.map(|a| a.ip()).collect(),
                        Err(_) => Vec::new(),
                    }
                })
            }),
        )
    }

    fn resolved_by(name: &str, resolve: Resolve) -> AgentPeer {
        AgentPeer {
            name: name.to_owned(),
            known: Mutex::new((Vec::new(), None)),
            lookup: tokio::sync::Mutex::new(()),
            resolve,
            everyone: false,
        }
    }

    /// Serve every peer: for sockets the agent handed over, bound in its own namespace.
    pub fn everyone() -> AgentPeer {
        AgentPeer {
            everyone: true,
            ..Self::resolved_by(
                "the agent's own namespace",
                Box::new(|_| Box::pin(async { Vec::new() })),
            )
        }
    }

    /// Whether `peer` is the agent, when that is known without a lookup.
    fn known(&self, peer: IpAddr) -> Option<bool> {
        if self.everyone {
            return Some(true);
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.0.contains(&canonical(peer)) {
            return Some(true);
        }
        known
            .1
            .is_some_and(|at| at.elapsed() < PEER_REFRESH)
            .then_some(false)
    }

    /// Whether `peer` is the agent.
    pub async fn admits(&self, peer: IpAddr) -> bool {
        if let Some(known) = self.known(peer) {
            return known;
        }
        let _one = self.lookup.lock().await;
        if let Some(known) = self.known(peer) {
            return known;
        }
        let peer = canonical(peer);
        let looked =
            tokio::time::timeout(PEER_LOOKUP_TIMEOUT, (self.resolve)(self.name.clone())).await;
        let addrs: Vec<IpAddr> = looked
            .unwrap_or_default()
            .into_iter()
            .map(canonical)
            .collect();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        // A lookup that failed or timed out keeps what the last one found: a stranger's
        // knock must not make the agent a stranger until the next lookup.
        if !addrs.is_empty() {
            known.0 = addrs;
        }
        known.1 = Some(Instant::now());
        known.0.contains(&peer)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The agent's DNS server (see the module doc).
pub struct Resolver {
    socket: tokio::net::UdpSocket,
    proxy: Arc<Proxy>,
    peer: Arc<AgentPeer>,
    /// The address of ours each asker reaches us on, by asker.
    ours: Mutex<HashMap<IpAddr, IpAddr>>,
    /// Queries from askers not yet known to be the agent, being judged.
    judging: Arc<tokio::sync::Semaphore>,
    /// The address every answer gives, when the socket is bound to one (a socket the agent
    /// handed over: its address in the agent's namespace, not one of the bundle's).
    fixed: Option<IpAddr>,
}

impl Resolver {
    /// Bind `listen` (UDP); names are judged by `proxy`'s route table as it is at each query
    /// (a host approved live resolves at once).
    pub async fn bind(
        listen: SocketAddr,
        proxy: Arc<Proxy>,
        peer: Arc<AgentPeer>,
    ) -> std::io::Result<Resolver> {
        let socket = tokio::net::UdpSocket::bind(listen).await?;
        Ok(Self::serving(socket, proxy, peer, None))
    }

    /// Serve on `socket`, which the agent handed over bound on the bundle's address in its
    /// namespace: every asker is the agent, every answer that address.
    pub fn handed(socket: std::net::UdpSocket, proxy: Arc<Proxy>) -> std::io::Result<Resolver> {
        socket.set_nonblocking(true)?;
        let fixed = Some(canonical(socket.local_addr()?.ip()));
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Self::serving(
            socket,
            proxy,
            Arc::new(AgentPeer::everyone()),
            fixed,
        ))
    }

    fn serving(
        socket: tokio::net::UdpSocket,
        proxy: Arc<Proxy>,
        peer: Arc<AgentPeer>,
        fixed: Option<IpAddr>,
    ) -> Resolver {
        crate::busy_poll::watch(&socket);
        Resolver {
            socket,
            proxy,
            peer,
            ours: Mutex::new(HashMap::new()),
            judging: Arc::new(tokio::sync::Semaphore::new(JUDGED_AT_ONCE)),
            fixed,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answer queries for as long as egress runs. An asker not known to be the agent is
    /// judged in a task of its own: the lookup of the agent's name must not hold up the
    /// agent's queries behind it.
    pub async fn serve(self: Arc<Self>) {
        let this = self;
        let mut buf = vec![0u8; MAX_QUERY];
        loop {
            let (n, from) = match this.socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    // A receive error is the datagram's, not the socket's: the resolver goes on.
                    this.proxy
                        .log
                        .event("dns", &format!("receiving a query failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            match this.peer.known(from.ip()) {
                Some(true) => this.reply(&buf[..n], from).await,
                // Not the agent: no answer at all (an answer would tell a local process the
                // allowlist, and it has no business asking).
                Some(false) => {}
                // At most a few askers wait for the lookup: a flood from elsewhere is dropped,
                // not queued.
                None => {
                    let Ok(permit) = this.judging.clone().try_acquire_owned() else {
                        continue;
                    };
                    let (this, query) = (this.clone(), buf[..n].to_vec());
                    tokio::spawn(async move {
                        if this.peer.admits(from.ip()).await {
                            this.reply(&query, from).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Send the agent at `to` the answer to `query`, if it is a query.
    async fn reply(&self, query: &[u8], to: SocketAddr) {
        let Some(ours) = self.ours_toward(to.ip()) else {
            return;
        };
        let active = self.proxy.active.load();
        if let Some(answer) = answer(query, &active.table, ours) {
            let _ = self.socket.send_to(&answer, to).await;
        }
    }

    /// Our address as `asker` sees it: the source the kernel picks toward it.
    fn ours_toward(&self, asker: IpAddr) -> Option<IpAddr> {
        if self.fixed.is_some() {
            return self.fixed;
        }
        let mut ours = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = ours.get(&asker) {
            return Some(*ip);
        }
        let probe = std::net::UdpSocket::bind((
            if asker.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))
        .ok()?;
        probe.connect((asker, 9)).ok()?;
        let ip = canonical(probe.local_addr().ok()?.ip());
        ours.insert(asker, ip);
        Some(ip)
    }
}

/// The answer to the DNS message `query`: `ours` for an `A` question about a name a route of
/// `table` allows, no records for its other types, NXDOMAIN for every other name; `None` for
/// what is no query at all (dropped, as a resolver drops garbage).
pub fn answer(query: &[u8], table: &RouteTable, ours: IpAddr) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(false)
        .set_authoritative(true);
    r.add_queries(q.queries().iter().cloned());
    let question = match (q.op_code(), q.queries()) {
        (OpCode::Query, [one]) => one,
        _ => {
            r.set_response_code(ResponseCode::NotImp);
            return r.to_vec().ok();
        }
    };
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    if !table.knows(name) {
        r.set_response_code(ResponseCode::NXDomain);
        return r.to_vec().ok();
    }
    if let (RecordType::A, IpAddr::V4(v4)) = (question.query_type(), ours) {
        r.add_answer(Record::from_rdata(
            question.name().clone(),
            ANSWER_TTL,
            RData::A(A(v4)),
        ));
    }
    r.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn table() -> RouteTable {
        RouteTable::parse(
            b"routes:\n- host: api.example.com\n- host: '*.cdn.example.net'\n",
            &|_| None,
        )
        .unwrap()
    }

    fn ask(name: &str, kind: RecordType) -> Message {
        let mut q = Message::new();
        q.set_id(77)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        let ours = IpAddr::from([10, 0, 0, 2]);
        Message::from_vec(&answer(&q.to_vec().unwrap(), &table(), ours).unwrap()).unwrap()
    }

    #[test]
    fn allowed_names_resolve_to_egress_and_nothing_else_resolves() {
        for name in ["api.example.com.", "API.Example.com", "x.cdn.example.net."] {
            let r = ask(name, RecordType::A);
            assert_eq!(r.id(), 77);
            assert_eq!(r.response_code(), ResponseCode::NoError, "{name}");
            let ips: Vec<String> = r.answers().iter().map(|a| a.data().to_string()).collect();
            assert_eq!(ips, ["10.0.0.2"], "{name}");
        }
        // Other types of an allowed name: no records (no IPv6 in the bottle).
        let r = ask("api.example.com.", RecordType::AAAA);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
        // Everything else does not exist, whatever it carries.
        for name in [
            "example.com.",
            "evil.test.",
            "c2VjcmV0LXRva2Vu.exfil.test.",
            "api.example.com.evil.test.",
            "cdn.example.net.",
        ] {
            let r = ask(name, RecordType::A);
            assert_eq!(r.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(r.answers().is_empty(), "{name}");
        }
        let r = ask("2.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn garbage_and_odd_messages_get_no_answer_or_a_refusal() {
        assert!(answer(b"", &table(), IpAddr::from([10, 0, 0, 2])).is_none());
        assert!(answer(&[0xff; 40], &table(), IpAddr::from([10, 0, 0, 2])).is_none());
        let mut two = Message::new();
        two.add_query(Query::query(
            Name::from_ascii("api.example.com.").unwrap(),
            RecordType::A,
        ))
        .add_query(Query::query(
            Name::from_ascii("x.test.").unwrap(),
            RecordType::A,
        ));
        let r = Message::from_vec(
            &answer(
                &two.to_vec().unwrap(),
                &table(),
                IpAddr::from([10, 0, 0, 2]),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.response_code(), ResponseCode::NotImp);
        assert!(r.answers().is_empty());
    }

    #[tokio::test]
    async fn only_the_agents_address_is_admitted() {
        assert_eq!(
            AgentPeer::new("agent").name,
            "agent.",
            "looked up as it stands"
        );
        let peer = AgentPeer::new("127.0.0.1");
        assert!(peer.admits(IpAddr::from([127, 0, 0, 1])).await);
        assert!(
            peer.admits("::ffff:127.0.0.1".parse().unwrap()).await,
            "mapped"
        );
        assert!(!peer.admits(IpAddr::from([172, 17, 0, 1])).await);
        let nobody = AgentPeer::new("no-such-agent.invalid");
        assert!(!nobody.admits(IpAddr::from([127, 0, 0, 1])).await);
    }

    #[tokio::test]
    async fn a_stranger_whose_lookup_hangs_does_not_hold_up_the_agents_queries() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lookups = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (counted, released) = (lookups.clone(), release.clone());
        // The first lookup answers at once; the next one hangs until the test lets it go,
        // as the system's resolver does when its server does not answer.
        let peer = AgentPeer::resolved_by(
            "agent",
            Box::new(move |_| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let released = released.clone();
                Box::pin(async move {
                    if n > 0 {
                        released.notified().await;
                    }
                    vec![IpAddr::from([127, 0, 0, 1])]
                })
            }),
        );
        let resolver = Resolver::bind(
            "127.0.0.1:0".parse().unwrap(),
            crate::proxy::for_tests(table()),
            Arc::new(peer),
        )
        .await
        .unwrap();
        let dns = resolver.local_addr().unwrap();
        tokio::spawn(Arc::new(resolver).serve());
        let agent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let mut query = Message::new();
        query.set_id(78).add_query(Query::query(
            Name::from_ascii("api.example.com.").unwrap(),
            RecordType::A,
        ));
        let query = query.to_vec().unwrap();
        async fn answered(s: &tokio::net::UdpSocket, query: &[u8], dns: SocketAddr) -> Message {
            s.send_to(query, dns).await.unwrap();
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
        assert_eq!(answered(&agent, &query, dns).await.answers().len(), 1);
        // Past the refresh, a stranger's knock looks the agent's name up again: that lookup
        // hangs.
        tokio::time::sleep(PEER_REFRESH + Duration::from_millis(100)).await;
        stranger.send_to(&query, dns).await.unwrap();
        while lookups.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = answered(&agent, &query, dns).await;
        assert_eq!(r.answers().len(), 1, "the agent is answered meanwhile");
        assert_eq!(lookups.load(Ordering::SeqCst), 2, "the lookup still hangs");
        release.notify_one();
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_agent_it_knew() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        // The first lookup finds the agent; the next one fails (a resolver that timed out).
        let peer = AgentPeer::resolved_by(
            "agent",
            Box::new(move |_| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        vec![IpAddr::from([127, 0, 0, 1])]
                    } else {
                        Vec::new()
                    }
                })
            }),
        );
        assert!(peer.admits(IpAddr::from([127, 0, 0, 1])).await);
        tokio::time::sleep(PEER_REFRESH + Duration::from_millis(50)).await;
        assert!(!peer.admits(IpAddr::from([127, 0, 0, 2])).await);
        assert_eq!(
            lookups.load(Ordering::SeqCst),
            2,
            "the stranger made it look again"
        );
        assert!(
            peer.admits(IpAddr::from([127, 0, 0, 1])).await,
            "the agent is still the agent"
        );
    }
}
