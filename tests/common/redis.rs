//! Helpers of the Redis tests (`#[path]`-included by `tests/redis.rs` and
//! `tests/redis_faults.rs`): real `redis-server` processes on free loopback ports.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use elvon::features::aggregate::{Aggregate, Aggregates, Event};
use elvon::redis::RedisFeatureSource;
use elvon::Engine;
use serde_json::json;

#[path = "recorder.rs"]
pub mod recorder;

/// The process-wide recorder of this test binary: breaker transitions happen on the source's
/// runtime thread, which a thread-local recorder would not see.
pub fn recorder() -> &'static recorder::Rec {
    static REC: std::sync::OnceLock<&'static recorder::Rec> = std::sync::OnceLock::new();
    REC.get_or_init(|| {
        let rec: &'static recorder::Rec = Box::leak(Box::default());
        metrics::set_global_recorder(rec).expect("no other recorder in this binary");
        rec
    })
}

/// The tests of this file run one at a time: two of them time calls against a deadline, and
/// the others' servers and cluster setup would compete for the 2 cores.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `redis-server` child process, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn redis_bin(name: &str) -> PathBuf {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{name}` not found: install it (Debian/Ubuntu: `apt-get install redis-server`; \
         scripts/test.sh does this) to run the Redis tests"
    );
    PathBuf::from(name)
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let child = Command::new(redis_bin("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let t = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(redis_bin("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped server must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
        }
        self.kill();
    }
}

pub const DAY: u64 = 86_400_000;

/// Now, unix milliseconds (what the source's default clock reads).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

pub fn aggregates() -> Aggregates {
    Aggregates::new(vec![
        Aggregate::count("page_view_7d", "page_view").window(Duration::from_millis(DAY), 7),
        Aggregate::sum("spend", "purchase", "amount"),
        Aggregate::last("last_category", "page_view", "category"),
    ])
    .expect("valid aggregates")
}

pub fn config() -> String {
    json!({"version": "r1", "slots": [{
        "id": "banner",
        "variants": [{"id": "default"}, {"id": "engaged"}, {"id": "spender"}],
        "default": "default",
        "rules": [
            {"when": {"feature": "spend", "op": "ge", "value": 100}, "serve": "spender"},
            {"when": {"feature": "page_view_7d", "op": "ge", "value": 3}, "serve": "engaged"}
        ]
    }]})
    .to_string()
}

pub fn engine(source: RedisFeatureSource, deadline: Duration) -> Engine {
    let e = Engine::builder()
        .source(source)
        .fetch_deadline(deadline)
        .build();
    e.load_config_json(&config()).expect("valid config");
    e
}

pub fn views(user: &str, n: usize, at: u64, tag: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::new(format!("{tag}-{user}-{i}"), user, "page_view", at).with("category", "shoes")
        })
        .collect()
}
