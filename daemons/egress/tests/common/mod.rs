//! The rig the egress tests share: a real origin with its own CA, the real `bottle-egress`
//! binary in front of it on loopback, and the clients' helpers.

#![allow(dead_code, reason = "each test binary uses its own part of the rig")]

use bottle_egress::testing::{Origin, TestPki};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The real token egress injects; the agent only ever holds a placeholder.
pub const TOKEN: &str = "real-t0ken-from-the-host-7c1d";

/// An origin, an egress in front of it, and the files they share.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub origin: Origin,
    pub egress: Child,
    pub proxy: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    pub _rt: tokio::runtime::Runtime,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.egress.kill();
        let _ = self.egress.wait();
    }
}

/// Routes for `origin.test` (mapped to loopback) with whatever else a test adds.
pub fn routes(extra: &str) -> String {
    format!(
        "routes:\n\
         - host: origin.test\n  auth_scheme: Bearer\n  token_env: EGRESS_TOKEN_0\n\
         - host: keyed.test\n  auth_header: x-api-key\n  token_env: EGRESS_TOKEN_0\n\
         - host: repos.test\n  path_allowlist: [/repos/example/]\n\
         - host: plain.test\n\
         - host: localhost\n\
         {extra}\
         hosts:\n  origin.test: 127.0.0.1\n  keyed.test: 127.0.0.1\n  repos.test: 127.0.0.1\n  plain.test: 127.0.0.1\n\
         \x20 api.github.com: 127.0.0.1\n  uploads.github.com: 127.0.0.1\n  gitlab.com: 127.0.0.1\n  readonly.test: 127.0.0.1\n"
    )
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(&routes(""), &[])
    }

    /// An origin, and an egress with `routes_yaml` and `egress_args` in front of it.
    pub fn with(routes_yaml: &str, egress_args: &[&str]) -> Rig {
        Rig::with_env(routes_yaml, egress_args, &[])
    }

    /// As [`Rig::with`], egress getting `env` too.
    pub fn with_env(routes_yaml: &str, egress_args: &[&str], env: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let origin_pki = TestPki::new(&[
            "origin.test",
            "keyed.test",
            "repos.test",
            "plain.test",
            "localhost",
            "api.github.com",
            "uploads.github.com",
            "gitlab.com",
            "readonly.test",
        ]);
        let git_root = dir.path().join("git");
        std::fs::create_dir_all(&git_root).unwrap();
        let origin = rt.block_on(Origin::start(
            "127.0.0.1".parse().unwrap(),
            &origin_pki,
            git_root,
        ));
        origin_pki.write_ca(dir.path(), "origin-ca.pem");
        let egress_pki = TestPki::new(&["unused"]);
        std::fs::write(
            dir.path().join("egress-bundle.pem"),
            &egress_pki.ca_bundle_pem,
        )
        .unwrap();
        egress_pki.write_ca(dir.path(), "egress-ca.pem");
        // `{origin_https_port}` in the routes is the origin's port, known only now.
        let routes_yaml =
            routes_yaml.replace("{origin_https_port}", &origin.https.port().to_string());
        std::fs::write(dir.path().join("routes.yaml"), routes_yaml).unwrap();
        let (egress, proxy, log) = spawn_egress(dir.path(), egress_args, env);
        Rig {
            dir,
            origin,
            egress,
            proxy,
            log,
            _rt: rt,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn https(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.origin.https.port())
    }

    pub fn http(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.origin.http.port())
    }

    /// curl through egress, trusting egress's CA; `-s -S`, and the status code printed last.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-x",
                &format!("http://{}", self.proxy),
            ])
            .arg("--cacert")
            .arg(self.path("egress-ca.pem"))
            .args(["-w", "\n%{http_code} %{http_connect}"])
            .args(args)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            // curl's own error, for the assertion that fails next.
            text = format!("{}{text}", String::from_utf8_lossy(&out.stderr));
        }
        let (body, codes) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
        // A refused CONNECT has no response code, only a CONNECT code.
        let code = codes
            .split_whitespace()
            .filter_map(|c| c.parse::<u16>().ok())
            .find(|c| *c != 0)
            .unwrap_or(0);
        (code, body.to_owned())
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(l) = self.log_lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?} in {:#?}", self.log_lines());
    }
}

/// Start the real binary on a free port; its start line says which.
pub fn spawn_egress(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottle-egress"))
        .args(["--listen", "127.0.0.1:0", "--routes"])
        .arg(dir.join("routes.yaml"))
        .arg("--ca")
        .arg(dir.join("egress-bundle.pem"))
        .arg("--upstream-ca")
        .arg(dir.join("origin-ca.pem"))
        .args(extra)
        .env_clear()
        .env("EGRESS_TOKEN_0", TOKEN)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        _ => {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("egress did not start: {err}");
        }
    };
    let addr: SocketAddr = first
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first}"));
    let log = Arc::new(Mutex::new(vec![first]));
    let l = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (child, addr, log)
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// With a hop token (egress's port published beyond the bottle), a request without it is
/// refused before anything is routed, so a local user cannot spend the injected credentials;
/// the agent's proxy URL carries it, and it never reaches the origin.
pub fn python(args: &[&str]) -> Output {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
