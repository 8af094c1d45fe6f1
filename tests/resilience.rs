//! The API under a failing database, a failing Redis, an exhausted pool and misbehaving
//! clients: `/readyz`, fast 503s with `Retry-After`, submissions that never half-happen, the
//! startup warning of a pool that cannot fit, and the body limit and body timeout as clients
//! that write before they read see them.
//!
//! Outages are made with a TCP proxy inside the test, between `serve` and the shared
//! PostgreSQL or Redis: cutting it drops every connection through it and closes each new one at
//! once; stopping it also refuses new ones, as a server that is down does. The shared servers
//! themselves are never touched.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The deadline of a request that must fail fast.
const FAST: Duration = Duration::from_secs(2);

/// A TCP proxy to `upstream` that can be cut (connections close at once, as a server that
/// crashed mid-handshake), stopped (connections are refused, as a server that is down) and
/// restored.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    cut: watch::Sender<bool>,
    accepting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(false);
        let proxy = Proxy {
            addr,
            upstream,
            cut,
            accepting: std::sync::Mutex::new(None),
        };
        proxy.accept(listener);
        proxy
    }

    fn accept(&self, listener: TcpListener) {
        let (upstream, watching) = (self.upstream, self.cut.subscribe());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        *self.accepting.lock().expect("proxy lock") = Some(task);
    }

    /// Drop every connection through the proxy, and close new ones at once.
    fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Drop every connection and stop listening: new connections are refused.
    async fn stop(&self) {
        self.cut();
        let task = self.accepting.lock().expect("proxy lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Forward again (listening again on the same address after [`Proxy::stop`]).
    async fn restore(&self) {
        if self.accepting.lock().expect("proxy lock").is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .expect("bind the proxy's address again");
            self.accept(listener);
        }
        self.cut.send_replace(false);
    }

    /// `url` (`scheme://[user@]host:port/...`) with its host and port replaced by the proxy's.
    fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority
            .rsplit_once('@')
            .map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{user}{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(task) = self.accepting.lock().expect("proxy lock").take() {
            task.abort();
        }
    }
}

/// The `host:port` of a URL.
fn address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("`{host_port}` (from {url}) is not an address: {e}"))
}

/// Restart `serve` with these database and Redis URLs (the harness's own stay as they are, so
/// its clean-up never goes through a proxy).
async fn restart_serve_with(h: &mut Harness, database_url: &str, redis_url: &str) {
    if let Some(mut old) = h.serve.take() {
        old.kill().await;
    }
    let (database, redis) = (h.database_url.clone(), h.redis_url.clone());
    h.database_url = database_url.to_owned();
    h.redis_url = redis_url.to_owned();
    h.start_serve().await;
    h.database_url = database;
    h.redis_url = redis;
}

/// A client with no connection reuse and a deadline well past the server's 30 s request
/// timeout, so slow answers are measured rather than cut off.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// An answer and how long it took.
struct Timed {
    reply: Reply,
    retry_after: Option<String>,
    took: Duration,
}

async fn timed(request: reqwest::RequestBuilder) -> Timed {
    let started = Instant::now();
    let response = request.send().await.expect("the API answered");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, retry_after) = (
        header("content-type").unwrap_or_default(),
        header("retry-after"),
    );
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Timed {
        reply: Reply {
            status,
            content_type,
            body,
        },
        retry_after,
        took,
    }
}

/// A fast 503 problem with `Retry-After`.
fn assert_fast_503(what: &str, answer: &Timed) {
    answer.reply.problem(503);
    assert!(
        answer.took <= FAST,
        "{what}: the 503 took {:?}, more than {FAST:?}",
        answer.took
    );
    assert!(
        answer.retry_after.is_some(),
        "{what}: no Retry-After on {:?}",
        answer.reply
    );
}

async fn readyz(h: &Harness) -> Timed {
    timed(client().get(h.url("/readyz"))).await
}

/// Missions in the test's database, counted there (not through the API).
async fn missions_in_database(h: &Harness) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    sqlx::query_scalar::<_, i64>("select count(*) from missions")
        .fetch_one(&mut conn)
        .await
        .expect("count missions")
}

fn noop_plan() -> Value {
    json!({ "workflow": "plan", "input": { "steps": [{ "name": "a", "noop": {} }] } })
}

/// Wait until `/readyz` answers 200; panics after `timeout`.
async fn wait_ready(h: &Harness, timeout: Duration) {
    let polled = poll(timeout, || async {
        let answer = readyz(h).await;
        if answer.reply.status == 200 {
            Ok(())
        } else {
            Err(answer.reply)
        }
    })
    .await;
    if let Err(reply) = polled {
        panic!("/readyz still answers {reply:?} after {timeout:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_requests_fast_and_readyz_reports_it() {
    let mut h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let proxy = Proxy::start(address_of(&h.database_url)).await;
    let (through_proxy, redis) = (proxy.url_for(&h.database_url), h.redis_url.clone());
    restart_serve_with(&mut h, &through_proxy, &redis).await;

    let mission = id_of(&h.submit(json!([{ "name": "a", "noop": {} }])).await);
    let ready = readyz(&h).await;
    assert_eq!(ready.reply.status, 200, "{:?}", ready.reply);
    assert_eq!(
        ready.reply.body,
        json!({ "status": "ok", "checks": { "database": "ok", "redis": "ok" } })
    );

    proxy.cut();
    let ready = readyz(&h).await;
    assert_fast_503("/readyz", &ready);
    assert_eq!(
        ready.reply.body["checks"]["database"], "unreachable",
        "{:?}",
        ready.reply
    );
    assert_eq!(
        ready.reply.body["checks"]["redis"], "ok",
        "{:?}",
        ready.reply
    );
    assert!(
        ready.reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("PostgreSQL")),
        "{:?}",
        ready.reply
    );
    // /healthz still says the process is up.
    let health = timed(client().get(h.url("/healthz"))).await;
    assert_eq!(health.reply.status, 200);

    let http = client();
    let with_key = |request: reqwest::RequestBuilder| request.header("X-API-Key", h.key.clone());
    for (what, request) in [
        (
            "GET a mission",
            with_key(http.get(h.url(&format!("/api/v1/missions/{mission}")))),
        ),
        (
            "GET the list",
            with_key(http.get(h.url("/api/v1/missions"))),
        ),
        (
            "a submission",
            with_key(http.post(h.url("/api/v1/missions"))).json(&noop_plan()),
        ),
        (
            "a cancellation",
            with_key(http.post(h.url(&format!("/api/v1/missions/{mission}/cancel")))),
        ),
    ] {
        assert_fast_503(what, &timed(request).await);
    }

    proxy.restore().await;
    wait_ready(&h, secs(15)).await;

    // A database that refuses connections: each request waits out the acquire timeout only.
    proxy.stop().await;
    assert_fast_503("/readyz", &readyz(&h).await);
    for (what, request) in [
        (
            "GET a mission",
            with_key(http.get(h.url(&format!("/api/v1/missions/{mission}")))),
        ),
        (
            "a submission",
            with_key(http.post(h.url("/api/v1/missions"))).json(&noop_plan()),
        ),
    ] {
        assert_fast_503(what, &timed(request).await);
    }

    proxy.restore().await;
    wait_ready(&h, secs(15)).await;
    let back = h.get(&mission).await;
    assert_eq!(back["id"], mission.as_str());
    assert_eq!(
        missions_in_database(&h).await,
        1,
        "the submission answered 503 during the outage created nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_redis_when_redis_is_unreachable() {
    let mut h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let proxy = Proxy::start(address_of(&h.redis_url)).await;
    let (database, through_proxy) = (h.database_url.clone(), proxy.url_for(&h.redis_url));
    restart_serve_with(&mut h, &database, &through_proxy).await;
    wait_ready(&h, secs(10)).await;

    proxy.cut();
    let ready = readyz(&h).await;
    assert_fast_503("/readyz", &ready);
    assert_eq!(
        ready.reply.body["checks"]["redis"], "unreachable",
        "{:?}",
        ready.reply
    );
    assert_eq!(
        ready.reply.body["checks"]["database"], "ok",
        "{:?}",
        ready.reply
    );
    assert!(
        ready.reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Redis")),
        "{:?}",
        ready.reply
    );

    proxy.restore().await;
    wait_ready(&h, secs(20)).await;
}

/// The original failure: a submission whose insert waited past the 30 s request timeout was
/// answered 503, and its insert committed anyway. Here the insert waits on a row lock the test
/// holds (the same idempotency key, inserted by a transaction left open), and the lock is let go
/// only once the client has its answer: an error answer must leave nothing behind. Meanwhile
/// the pool (one connection, held by that insert) is exhausted, and another request must be
/// refused fast instead of queueing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_answered_with_an_error_created_nothing() {
    use sqlx::Connection;
    let h = Harness::with(Options {
        workers: 0,
        env: vec![("HYPERCODE_DB_POOL", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let mut blocker = sqlx::PgConnection::connect(&h.database_url)
        .await
        .expect("connect");
    let mut lock = blocker.begin().await.expect("begin");
    sqlx::query(
        "insert into missions (id, workflow, input, idempotency_key, last_seq, enqueued_at) \
         values (gen_random_uuid(), 'plan', '{}', 'held', 0, now())",
    )
    .execute(&mut *lock)
    .await
    .expect("hold the idempotency key");

    let mut body = noop_plan();
    body["idempotency_key"] = json!("held");
    let request = client()
        .post(h.url("/api/v1/missions"))
        .header("X-API-Key", &h.key)
        .json(&body);
    let blocked = tokio::spawn(timed(request));
    // Wait until the blocked insert holds the pool's only connection: it waits on the lock.
    let watcher = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&h.database_url)
        .await
        .expect("connect");
    let watcher = &watcher;
    let waiting = poll(secs(15), move || async move {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(watcher)
        .await
        .expect("read pg_stat_activity");
        if waiting > 0 {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    assert!(
        waiting.is_ok(),
        "the submission never waited on the held key"
    );
    let refused = timed(
        client()
            .get(h.url("/api/v1/missions"))
            .header("X-API-Key", &h.key),
    )
    .await;
    let blocked = blocked.await.expect("the blocked submission");
    lock.rollback().await.expect("let go of the key");
    // Anything the answered submission left in flight would commit now that the key is free.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        missions_in_database(&h).await,
        0,
        "a submission answered {:?} after {:?} created a mission",
        blocked.reply,
        blocked.took
    );
    blocked.reply.problem(503);
    assert!(blocked.retry_after.is_some(), "{:?}", blocked.reply);
    assert_fast_503("a request while the pool is exhausted", &refused);
}

#[tokio::test]
async fn a_pool_that_cannot_fit_is_warned_about_at_startup() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let max_connections: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&h.database_url)
            .await
            .expect("connect");
        sqlx::query_scalar("select current_setting('max_connections')::bigint")
            .fetch_one(&mut conn)
            .await
            .expect("max_connections")
    };
    let pool = max_connections + 100;
    let mut serve = h
        .command(&["serve"])
        .env("HYPERCODE_DB_POOL", pool.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = serve.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let warning = tokio::time::timeout(secs(20), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("WARN") && line.contains("max_connections") {
                return Ok(line);
            }
            seen.push(line);
        }
        Err(seen)
    })
    .await;
    let _ = serve.kill().await;
    let line = match warning {
        Ok(Ok(line)) => line,
        other => panic!("no WARN line naming max_connections: {other:?}"),
    };
    assert!(
        line.contains(&format!("max_connections={max_connections}"))
            && line.contains(&format!("HYPERCODE_DB_POOL={pool}")),
        "the warning names both numbers: {line}"
    );
    // The harness's pool fits: logged, without a warning.
    let log = std::fs::read_to_string(&h.serve.as_ref().expect("serve").log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("database pool: up to 9 connections")),
        "{log}"
    );
    assert!(!log.contains("cannot fit"), "{log}");
}

/// Write a whole request before reading anything, as Python's `urllib` and many SDKs do; return
/// what the server answered (or the I/O error met).
async fn write_then_read(addr: &str, head: &str, body: &[u8]) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(secs(20), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Write a request while reading the answer, as `curl` does; return what arrived before the
/// connection ended, however it ended.
async fn read_while_writing(addr: &str, request: String) -> String {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(request.as_bytes()).await;
        writer
    });
    let mut answer = Vec::new();
    let mut buffer = [0; 8192];
    let deadline = Instant::now() + secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(secs(20), reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    drop(writing.await);
    String::from_utf8_lossy(&answer).into_owned()
}

fn host_of(h: &Harness) -> String {
    h.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_first_reads_the_413() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let body = vec![b'x'; 6 * 1024 * 1024];
    let head = format!(
        "POST /api/v1/missions HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        host_of(&h),
        h.key,
        body.len()
    );
    for attempt in 0..3 {
        let answer = write_then_read(&host_of(&h), &head, &body)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the client met {e} instead of a 413"));
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(answer.contains("\"status\":413"), "{answer}");
    }

    // The same with Python's urllib, the client of the original report.
    let script = r#"
import sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1], data=b"x" * (6 * 1024 * 1024), method="POST",
    headers={"Content-Type": "application/json", "X-API-Key": sys.argv[2]})
try:
    urllib.request.urlopen(request, timeout=20)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("Content-Type"), e.read().decode())
"#;
    let output = tokio::process::Command::new("python3")
        .args(["-c", script, &h.url("/api/v1/missions"), &h.key])
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("413 application/problem+json"),
        "urllib saw: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_gets_408_within_seconds() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut stream = TcpStream::connect(host_of(&h)).await.expect("connect");
    let head = format!(
        "POST /api/v1/missions HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"workflow\"",
        host_of(&h),
        h.key
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .expect("read the answer");
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(took < secs(10), "the 408 took {took:?}");
    // The server is still fine.
    assert_eq!(h.submit_body(&noop_plan()).await.status, 201);
}

#[tokio::test]
async fn huge_headers_get_431() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Padding: {}\r\n\r\n",
        host_of(&h),
        "p".repeat(1024 * 1024)
    );
    let answer = read_while_writing(&host_of(&h), request).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}
