//! Polling before sleeping: a worker about to sleep first watches the open connections for a
//! short while, as the kernel's haltpoll and Go's scheduler do.
//!
//! Why: on a virtual machine whose idle cores halt at once, the packet that wakes a sleeping
//! worker costs tens of microseconds (the host must run the halted vCPU again), and a request
//! through a proxy wakes it twice (the agent's request, the origin's answer). Measured with
//! `benches/egress.sh` at one connection on such a machine, a relay that only copies bytes
//! went from ~10x to ~25x mitmproxy's rate once it polled instead of sleeping. The price is
//! bounded: at most [`DEFAULT_WINDOW`] of one core's time after each wake, one worker at a
//! time (a worker finding another polling sleeps at once), and none at all while nothing
//! happens. An agent that sends a byte every window keeps that one worker busy, as a stream of
//! its requests would keep it anyway; `resources.bundle.cpus` caps the bundle as a whole.
//!
//! What ends a poll early is a byte on a watched socket: the listeners and every connection.
//! Other wakes (a timer, a body judged on the blocking pool, a name resolved) wait for the
//! window to end, at most [`MAX_WINDOW`]; none is lost, the runtime looks at its queues again
//! after the hook.
//!
//! The connections are watched through an epoll set of this module's own (the runtime's is
//! not reachable): every accepted and every dialled socket is added once, and the kernel
//! drops it from the set when it closes. A worker ends its poll as soon as one of them has
//! data; its sleep right after then returns at once, with the runtime's own poll.

use rustix::event::{Timespec, epoll};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a worker polls before it sleeps unless told otherwise (`--poll-before-sleep-us`).
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(100);

/// The longest window allowed: the delay a timer or a judged body may see.
pub const MAX_WINDOW: Duration = Duration::from_millis(1);

/// A set of watched sockets (listeners and connections) and how long to poll them.
pub struct Poller {
    set: OwnedFd,
    window_ns: AtomicU64,
    /// A worker is polling now: the others sleep at once.
    polling: AtomicBool,
}

impl Poller {
    /// An empty set polled for [`DEFAULT_WINDOW`]; `None` when the kernel gives no epoll set.
    pub fn new() -> Option<Poller> {
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
        Some(Poller {
            set,
            window_ns: AtomicU64::new(nanos(DEFAULT_WINDOW)),
            polling: AtomicBool::new(false),
        })
    }

    /// Set how long to poll before sleeping (at most [`MAX_WINDOW`]); zero turns polling off.
    pub fn set_window(&self, window: Duration) {
        self.window_ns
            .store(nanos(window.min(MAX_WINDOW)), Ordering::Relaxed);
    }

    /// Watch `socket` (a listener, an accepted or a dialled connection) until it closes.
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

    /// Poll the watched sockets for up to the window; return as soon as one has data, or at
    /// once when another worker is polling.
    pub fn poll(&self) {
        let window = Duration::from_nanos(self.window_ns.load(Ordering::Relaxed));
        if window.is_zero() || self.polling.swap(true, Ordering::Acquire) {
            return;
        }
        self.spin(window);
        self.polling.store(false, Ordering::Release);
    }

    fn spin(&self, window: Duration) {
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

/// Set how long this process's workers poll before sleeping (at most [`MAX_WINDOW`]); zero
/// turns polling off.
pub fn set_window(window: Duration) {
    if let Some(p) = global() {
        p.set_window(window);
    }
}

/// Watch one of this process's sockets (a listener or a connection) until it closes.
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

    /// A window over [`MAX_WINDOW`], so a test can tell a poll that lasted it from one that
    /// ended early on a loaded machine.
    fn set_long_window(p: &Poller, window: Duration) {
        p.window_ns.store(nanos(window), Ordering::Relaxed);
    }

    #[test]
    fn a_poll_ends_when_a_watched_socket_has_data_and_lasts_the_window_when_none_has() {
        let p = Poller::new().unwrap();
        let quiet = Duration::from_millis(50);
        set_long_window(&p, quiet);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        p.watch(&served);

        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= quiet, "nothing to read: the whole window");

        // A window no busy machine gets near: only the data can have ended the poll.
        let long = Duration::from_secs(30);
        set_long_window(&p, long);
        client.write_all(b"x").unwrap();
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() < long, "data ends the poll");

        // Closed, the socket leaves the set by itself.
        set_long_window(&p, quiet);
        drop((client, served));
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= quiet);
    }

    #[test]
    fn one_worker_polls_at_a_time_and_the_window_is_capped() {
        let p = Poller::new().unwrap();
        p.set_window(Duration::from_secs(3600));
        assert_eq!(p.window_ns.load(Ordering::Relaxed), nanos(MAX_WINDOW));
        // While one polls, another returns at once, not after the window.
        let long = Duration::from_secs(30);
        set_long_window(&p, long);
        p.polling.store(true, Ordering::Relaxed);
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() < long);
        assert!(
            p.polling.load(Ordering::Relaxed),
            "the other's flag is left"
        );
        p.polling.store(false, Ordering::Relaxed);
        set_long_window(&p, Duration::from_millis(5));
        p.poll();
        assert!(
            !p.polling.load(Ordering::Relaxed),
            "a poll clears its own flag"
        );
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
        set_long_window(&p, window);
        let t = Instant::now();
        p.poll();
        assert!(t.elapsed() >= window);
    }
}
