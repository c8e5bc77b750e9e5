//! Polling before sleeping: a worker about to sleep first watches the open connections for a
//! short while, as the kernel's haltpoll and Go's scheduler do.
//!
//! Why: on a virtual machine whose idle cores halt at once, the packet that wakes a sleeping
//! worker costs tens of microseconds (the host must run the halted vCPU again), and a request
//! through a proxy wakes it twice (the agent's request, the origin's answer). Measured with
//! `benches/egress.sh` at one connection on such a machine, a relay that only copies bytes
//! went from ~10x to ~25x mitmproxy's rate once it polled instead of sleeping. The price is
//! bounded: at most [`DEFAULT_WINDOW`] of one core's time after each wake, and none at all
//! while nothing happens (a worker that finds nothing within the window sleeps as before).
//! An agent that sends a byte every window keeps a worker busy, as a stream of its requests
//! would anyway; the bundle's CPU cap (`resources.bundle.cpus`) bounds both.
//!
//! The connections are watched through an epoll set of this module's own (the runtime's is
//! not reachable): every accepted and every dialled socket is added once, and the kernel
//! drops it from the set when it closes. A worker ends its poll as soon as one of them has
//! data; its sleep right after then returns at once, with the runtime's own poll.

use rustix::event::{Timespec, epoll};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a worker polls before it sleeps unless told otherwise (`--poll-before-sleep-us`).
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(100);

/// A set of watched connections and how long to poll them.
pub struct Poller {
    set: OwnedFd,
    window_ns: AtomicU64,
}

impl Poller {
    /// An empty set polled for [`DEFAULT_WINDOW`]; `None` when the kernel gives no epoll set.
    pub fn new() -> Option<Poller> {
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
        Some(Poller {
            set,
            window_ns: AtomicU64::new(nanos(DEFAULT_WINDOW)),
        })
    }

    /// Set how long to poll before sleeping; zero turns polling off.
    pub fn set_window(&self, window: Duration) {
        self.window_ns.store(nanos(window), Ordering::Relaxed);
    }

    /// Watch `socket` (an accepted or dialled connection) until it closes.
    pub fn watch(&self, socket: impl AsFd) {
        if self.window_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Level-triggered: unread data ends a poll at once, so a connection held back by its
        // peer never makes a worker poll in vain. A failure only costs this socket its poll.
        let _ = epoll::add(
            &self.set,
            socket,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        );
    }

    /// Poll the watched connections for up to the window; return as soon as one has data.
    pub fn poll(&self) {
        let window = Duration::from_nanos(self.window_ns.load(Ordering::Relaxed));
        if window.is_zero() {
            return;
        }
        let start = Instant::now();
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }];
        loop {
            match epoll::wait(&self.set, &mut events[..], Some(&now)) {
                Ok(0) => {}
                // Data, or an error that polling again would only repeat.
                Ok(_) | Err(_) => return,
            }
            if start.elapsed() >= window {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// This process's poller (none when the kernel gave no epoll set: workers sleep at once).
fn global() -> Option<&'static Poller> {
    static GLOBAL: OnceLock<Option<Poller>> = OnceLock::new();
    GLOBAL.get_or_init(Poller::new).as_ref()
}

/// Set how long this process's workers poll before sleeping; zero turns polling off.
pub fn set_window(window: Duration) {
    if let Some(p) = global() {
        p.set_window(window);
    }
}

/// Watch one of this process's connections until it closes.
pub fn watch(socket: impl AsFd) {
    if let Some(p) = global() {
        p.watch(socket);
    }
}

/// The runtime's hook before a worker sleeps (`on_thread_park`).
pub fn before_sleep() {
    if let Some(p) = global() {
        p.poll();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_poll_ends_when_a_watched_socket_has_data_and_lasts_the_window_when_none_has() {
        let p = Poller::new().unwrap();
        let quiet = Duration::from_millis(50);
        p.set_window(quiet);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        p.watch(&served);

        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= quiet, "nothing to read: the whole window");

        // A window no busy machine gets near: only the data can have ended the poll.
        let long = Duration::from_secs(30);
        p.set_window(long);
        client.write_all(b"x").unwrap();
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() < long, "data ends the poll");

        // Closed, the socket leaves the set by itself.
        p.set_window(quiet);
        drop((client, served));
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= quiet);
    }

    #[test]
    fn a_zero_window_polls_nothing_and_watches_nothing() {
        let p = Poller::new().unwrap();
        p.set_window(Duration::ZERO);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        p.watch(&served);
        client.write_all(b"x").unwrap();
        // Turned on later, the poll has nothing watched: it lasts its window.
        let window = Duration::from_millis(50);
        p.set_window(window);
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= window);
    }
}
