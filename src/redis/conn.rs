//! The connection (one node or a cluster), the private runtime and blocking calls on it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture};

use super::*;

/// The connection: one node or a cluster. Both pipeline concurrent requests.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The source's private runtime, owned by the source and its writers (never by the tasks
/// running on it, so it is not dropped on its own worker), and shut down without blocking,
/// so dropping the source inside async code is fine.
pub(super) struct OwnedRuntime(pub(super) Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `rt`, waiting on the calling thread at most `timeout` for it.
pub(super) fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
) -> Result<T, RedisError> {
    let task = rt.spawn(async move { tokio::time::timeout(timeout, fut).await });
    let deadline = crate::clock::deadline(timeout.saturating_add(Duration::from_millis(100)));
    match crate::features::block_on(task, deadline) {
        Some(Ok(Ok(Ok(v)))) => Ok(v),
        Some(Ok(Ok(Err(e)))) => Err(command_error(what, e)),
        Some(Err(e)) => Err(RedisError::Command {
            what: what.to_owned(),
            source: Box::new(e),
        }),
        Some(Ok(Err(_))) | None => Err(RedisError::Timeout(what.to_owned())),
    }
}

/// Runs `cmds`, each about one key, and gives their answers in order: one pipeline on a
/// single node, concurrent requests on a cluster (the keys may live on different nodes).
pub(super) async fn query_each<T: redis::FromRedisValue + Send>(
    conn: &Conn,
    cmds: Vec<Cmd>,
) -> redis::RedisResult<Vec<T>> {
    if matches!(conn, Conn::Cluster(_)) {
        let futs = cmds.iter().map(|cmd| {
            let mut c = conn.clone();
            async move { cmd.query_async::<T>(&mut c).await }
        });
        futures_util::future::try_join_all(futs).await
    } else {
        let mut p = redis::pipe();
        for cmd in cmds {
            p.add_command(cmd);
        }
        p.query_async(&mut conn.clone()).await
    }
}

pub(super) fn hmget(key: &str, fields: &[String]) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key).arg(fields);
    cmd
}

/// Fetches fields of one user's hash, refusing (error `ELVONTOOBIG`) when their values add up
/// to more than `ARGV[1]` bytes, before any value is sent. KEYS: the hash. ARGV: the byte cap,
/// then the fields.
const FETCH_LUA: &str = include_str!("fetch.lua");

pub(super) static FETCH_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FETCH_LUA));

/// Whether a Redis error is about one user's data (the breaker does not count those).
pub(super) fn is_per_key(e: &redis::RedisError) -> bool {
    // A reply of an unexpected shape for this key; not `Parse`, which means the connection's
    // byte stream is broken (a failure of the connection, which the breaker must count).
    matches!(e.code(), Some("WRONGTYPE" | "ELVONTOOBIG"))
        || e.kind() == redis::ErrorKind::UnexpectedReturnType && !e.is_io_error()
}

/// The message of a per-key error.
pub(super) fn data_message(e: &redis::RedisError) -> String {
    match e.code() {
        Some("WRONGTYPE") => "the user's key holds a value of the wrong type (not a hash)".into(),
        Some("ELVONTOOBIG") => format!(
            "the user's reply is too large: {}",
            e.detail().unwrap_or_default()
        ),
        _ => format!("the user's reply does not decode: {e}"),
    }
}
