//! Real parts for tests and the benchmark: an SSH upstream (Debian's `sshd`, as this user,
//! on an address the caller picks) serving bare repos, and a gate process in front of it.

use bottle_contract::gate::{GateFile, GateRepo, PushPolicy, ScanSettings};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh dir under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Make one named after `label`.
    pub fn new(label: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gate-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a command to success, or panic with its output.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git` with no user or system config, a fixed identity and no prompts.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("GIT_SSH_COMMAND")
        .env_remove("GIT_PROTOCOL");
    c
}

/// An SSH git server: `sshd` on `ip`, one user (this one), one client key.
pub struct Upstream {
    /// Everything it uses.
    pub dir: Scratch,
    sshd: Option<Child>,
    ip: String,
    /// Its port.
    pub port: u16,
    /// Its host key as `known_host:` wants it (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    /// The client key git-gate pushes with.
    pub client_key: PathBuf,
    user: String,
}

impl Upstream {
    /// Start one on `ip` (loopback for the daemon's tests; a Docker bridge's host address
    /// for bottle's).
    pub fn start(ip: &str) -> Upstream {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.is_file(),
            "these tests need Debian's openssh-server (/usr/sbin/sshd); `.ci/run` installs it"
        );
        let dir = Scratch::new("upstream");
        let d = &dir.0.clone();
        for key in ["host", "client"] {
            sh(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).expect("authorized_keys");
        std::fs::create_dir_all(d.join("repos")).expect("repos dir");
        // sshd run by root wants its privilege-separation dir.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = std::fs::read_to_string(d.join("host.pub")).expect("host.pub");
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let user = sh(Command::new("id").arg("-un")).trim().to_owned();
        let mut up = Upstream {
            dir,
            sshd: None,
            ip: ip.to_owned(),
            port: 0,
            host_key,
            client_key: d.join("client"),
            user,
        };
        up.port = free_port(ip);
        up.resume();
        up
    }

    /// Start sshd again on the same port (after [`Upstream::stop`]).
    pub fn resume(&mut self) {
        let d = &self.dir.0;
        let config = format!(
            "ListenAddress {ip}\nPort {port}\nHostKey {d}/host\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             AllowTcpForwarding no\nX11Forwarding no\nLogLevel ERROR\nMaxStartups 100\n",
            ip = self.ip,
            port = self.port,
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        self.sshd = Some(child);
        let addr: SocketAddr = format!("{}:{}", self.ip, self.port).parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop sshd (the upstream is then down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Give sshd a new host key (what a man in the middle would present).
    pub fn change_host_key(&mut self) {
        self.stop();
        let d = &self.dir.0;
        let _ = std::fs::remove_file(d.join("host"));
        let _ = std::fs::remove_file(d.join("host.pub"));
        sh(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "other", "-f"])
            .arg(d.join("host")));
        self.resume();
    }

    /// A new bare repo `name` with one commit on `main` (its HEAD), and its SSH URL.
    pub fn repo(&self, name: &str) -> String {
        let bare = self.bare(name);
        sh(git(&self.dir.0)
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare));
        let work = self.dir.0.join(format!("seed-{name}"));
        sh(git(&self.dir.0)
            .args(["init", "-q", "-b", "main"])
            .arg(&work));
        std::fs::write(work.join("README"), "seed\n").expect("seed");
        sh(git(&work).args(["add", "README"]));
        sh(git(&work).args(["commit", "-q", "-m", "seed"]));
        sh(git(&work).args(["push", "-q"]).arg(&bare).arg("main"));
        self.url(name)
    }

    /// The bare repo's path on disk.
    pub fn bare(&self, name: &str) -> PathBuf {
        self.dir.0.join("repos").join(format!("{name}.git"))
    }

    /// Its SSH URL.
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@{}:{}{}",
            self.user,
            self.ip,
            self.port,
            self.bare(name).display()
        )
    }

    /// The `known_hosts` name of this server.
    pub fn known_hosts_name(&self) -> String {
        format!("[{}]:{}", self.ip, self.port)
    }

    /// What `rev-parse REF` says in the bare repo (None when the ref does not exist).
    pub fn rev(&self, name: &str, r: &str) -> Option<String> {
        let out = git(&self.bare(name))
            .args(["rev-parse", "--verify", "-q", r])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A gate repo entry for `name`, with `push` as its policy.
    pub fn gate_repo(&self, name: &str, push: PushPolicy) -> GateRepo {
        GateRepo {
            name: name.to_owned(),
            upstream: self.url(name),
            host: self.ip.clone(),
            port: self.port,
            key: self.client_key.display().to_string(),
            push,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `bottle-git-gate` (the binary under test) with its config and log.
pub struct GateProcess {
    child: Child,
    /// Config, known_hosts, hooks and state.
    pub dir: Scratch,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its log lines so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl GateProcess {
    /// Write `gate.yaml` with `repos` (pinning `known_hosts` lines) and start `binary` on
    /// loopback. `Err` is what it printed when it refused to start.
    pub fn start(
        binary: &Path,
        known_hosts: &str,
        repos: Vec<GateRepo>,
        scan: ScanSettings,
    ) -> Result<GateProcess, String> {
        GateProcess::start_with_env(binary, known_hosts, repos, scan, &[])
    }

    /// [`GateProcess::start`] with `env` set for the daemon (`GIT_GATE_HOP_TOKEN`).
    pub fn start_with_env(
        binary: &Path,
        known_hosts: &str,
        repos: Vec<GateRepo>,
        scan: ScanSettings,
        env: &[(&str, &str)],
    ) -> Result<GateProcess, String> {
        let dir = Scratch::new("gate");
        let d = dir.0.clone();
        std::fs::write(d.join("known_hosts"), known_hosts).expect("known_hosts");
        let file = GateFile {
            known_hosts: d.join("known_hosts").display().to_string(),
            fetch_coalesce_ms: 0,
            scan,
            repos,
        };
        std::fs::write(
            d.join("gate.yaml"),
            serde_yaml::to_string(&file).expect("yaml"),
        )
        .expect("gate.yaml");
        std::fs::create_dir_all(d.join("hooks")).expect("hooks");
        std::os::unix::fs::symlink(binary, d.join("hooks/pre-receive")).expect("hook link");
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(d.join("gate.yaml"))
            .args(["--listen", "127.0.0.1:0", "--hooks"])
            .arg(d.join("hooks"))
            .arg("--state")
            .arg(d.join("state"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            _ => {
                let _ = child.wait();
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                return Err(err);
            }
        };
        let start: serde_json::Value = serde_json::from_str(&first).map_err(|e| e.to_string())?;
        let addr: SocketAddr = start["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no listen address in {first}"))?;
        let log = Arc::new(Mutex::new(vec![first]));
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().expect("log").push(l);
            }
        });
        Ok(GateProcess {
            child,
            dir,
            addr,
            log,
        })
    }

    /// `git://127.0.0.1:PORT/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}.git", self.addr)
    }

    /// The config file (edit it, then [`GateProcess::reload`]).
    pub fn config_path(&self) -> PathBuf {
        self.dir.0.join("gate.yaml")
    }

    /// Send SIGHUP and wait for its `reload` log line.
    pub fn reload(&self) -> serde_json::Value {
        let before = self.log.lock().expect("log").len();
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
        self.wait_for(before, |v| v["op"] == "reload")
    }

    /// Wait (up to 10 s) for a log line after index `from` that `pred` accepts.
    pub fn wait_for(
        &self,
        from: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log
                .lock()
                .expect("log")
                .iter()
                .skip(from)
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line in {:?}",
                self.log.lock().expect("log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl GateProcess {
    /// Send it `signal` and wait for it to end; its exit status.
    pub fn signal_and_wait(&mut self, signal: rustix::process::Signal) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, signal);
        self.child.wait().expect("the gate ends")
    }
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
