//! Per-key rate limiting: a token bucket per API key, kept in Redis so that every API replica
//! draws from the same bucket.
//!
//! A key whose role allows `N` requests per second has a bucket of `2N` tokens that refills at
//! `N` tokens per second; each request takes one token, and a request that finds less than one
//! is answered 429 with `Retry-After` (whole seconds, at least 1). One Lua script per request
//! refills the bucket by the time elapsed (read from Redis's own clock, `TIME`, so replicas
//! with skewed clocks agree), takes a token or computes the wait, and stores the bucket back
//! with an expiry: a bucket untouched long enough to be full again simply disappears.
//!
//! The limiter runs after authentication (it needs the key's id and role); see
//! [`crate::auth::authenticate`].
//!
//! **Failed authentication** is limited the same way, per client address (the TCP peer; an
//! IPv6 client by its /64, which one host usually holds whole): `HYPERCODE_AUTH_FAIL_LIMIT`
//! (default [`DEFAULT_AUTH_FAIL_RATE`]) failures per second, bursts of twice that. Every
//! request that presents a key (API header or sign-in form) first *looks* at its address's
//! bucket without taking from it ([`RateLimiter::admits_address`]): an empty bucket means 429
//! before the key is even looked up, so a flood of guesses costs the database nothing, and
//! a correct key from that address waits too. Only a failed attempt takes a token
//! ([`RateLimiter::failed_authentication`]), so successful requests never use the bucket up.
//! Requests carrying a session cookie are not counted: the cookie is not guessable, and a
//! stale one is answered by sending the browser to sign in again.
//!
//! **Redis unreachable: fail open.** When Redis errors or does not answer within
//! [`REDIS_TIMEOUT`], the request is let through and a warning is logged. The rate limit
//! protects the service from overload by one key; refusing every request because the
//! limiter's store is down would turn a partial outage into a total one, so availability wins
//! over strictness here. After a failure, Redis is not asked again for [`FAIL_OPEN_FOR`], so
//! an outage costs each request nothing rather than a timeout.

use crate::keys::{Principal, Role};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default sustained requests per second per key (`HYPERCODE_RATE_LIMIT`).
pub const DEFAULT_RATE: u32 = 50;

/// Default failed authentications per second per client address (`HYPERCODE_AUTH_FAIL_LIMIT`).
pub const DEFAULT_AUTH_FAIL_RATE: u32 = 10;

/// Longest the limiter waits for Redis before letting a request through.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the limiter stops asking Redis after it failed.
pub const FAIL_OPEN_FOR: Duration = Duration::from_secs(1);

/// The token bucket, atomically. `KEYS[1]` is the bucket, `ARGV[1]` the rate (tokens per
/// second), `ARGV[2]` the burst (the bucket's size), `ARGV[3]` the cost: 1 takes a token, 0
/// only looks (and writes nothing; a bucket that does not exist is full). Returns 0 when a
/// token was (or could be) taken, else the milliseconds until one will be available. Times are
/// milliseconds, which a Lua number (a double, printed with 14 significant digits when
/// stored) holds exactly.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1])
local at = tonumber(bucket[2])
if cost == 0 and (tokens == nil or at == nil) then
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - cost
else
  wait = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', at)
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
end
return wait
";

/// Sustained requests per second per key: a default and per-role overrides. Zero means
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `HYPERCODE_RATE_LIMIT`: for every role without an override.
    pub default: u32,
    /// `HYPERCODE_RATE_LIMIT_ADMIN`.
    pub admin: Option<u32>,
    /// `HYPERCODE_RATE_LIMIT_OPERATOR`.
    pub operator: Option<u32>,
    /// `HYPERCODE_RATE_LIMIT_AGENT`.
    pub agent: Option<u32>,
    /// `HYPERCODE_RATE_LIMIT_VIEWER`.
    pub viewer: Option<u32>,
    /// `HYPERCODE_AUTH_FAIL_LIMIT`: failed authentications per second per client address.
    pub auth_fail: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            default: DEFAULT_RATE,
            admin: None,
            operator: None,
            agent: None,
            viewer: None,
            auth_fail: DEFAULT_AUTH_FAIL_RATE,
        }
    }
}

impl RateLimits {
    /// The sustained rate of a role's keys (0: unlimited).
    pub fn rate(&self, role: Role) -> u32 {
        let specific = match role {
            Role::Admin => self.admin,
            Role::Operator => self.operator,
            Role::Agent => self.agent,
            Role::Viewer => self.viewer,
        };
        specific.unwrap_or(self.default)
    }

    /// The bucket size of a role's keys: twice the rate.
    pub fn burst(&self, role: Role) -> u64 {
        bucket_size(self.rate(role))
    }
}

/// Every bucket holds twice its rate.
fn bucket_size(rate: u32) -> u64 {
    u64::from(rate) * 2
}

/// A request over its key's (or its address's) limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The bucket's sustained rate.
    pub limit: u32,
    /// The bucket's size.
    pub burst: u64,
    /// Whole seconds until a token is available, at least 1 (the `Retry-After`).
    pub retry_after_s: u64,
}

/// The limiter every API replica consults; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    conn: ConnectionManager,
    /// `hypercode:{queue}:`; buckets are `ratelimit:{key_id}` and `authfail:{address}` under it.
    prefix: String,
    limits: RateLimits,
    script: redis::Script,
    started: Instant,
    /// Milliseconds since `started` until which Redis is not asked (fail open).
    skip_until_ms: AtomicU64,
    /// Whether the last attempt failed (to log the recovery once).
    degraded: AtomicBool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("RateLimiter(disabled)"),
            Some(inner) => f
                .debug_struct("RateLimiter")
                .field("prefix", &inner.prefix)
                .field("limits", &inner.limits)
                .finish_non_exhaustive(),
        }
    }
}

impl RateLimiter {
    /// A limiter that lets everything through.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// A limiter on the Redis at `redis_url`, with buckets named
    /// `hypercode:{queue}:ratelimit:{key_id}` (keys) and `hypercode:{queue}:authfail:{address}`
    /// (failed authentication). The connection is made lazily (and remade after
    /// failures), so an unreachable Redis does not stop the API from starting.
    pub fn new(redis_url: &str, queue: &str, limits: RateLimits) -> redis::RedisResult<Self> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                conn,
                prefix: format!("hypercode:{queue}:"),
                limits,
                script: redis::Script::new(SCRIPT),
                started: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
            })),
        })
    }

    /// Take one token from the key's bucket, or say how long to wait.
    pub async fn check(&self, principal: &Principal) -> Result<(), Limited> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let limit = inner.limits.rate(principal.role);
        let bucket = format!("ratelimit:{}", principal.key_id);
        inner.take(bucket, limit, Cost::Take).await
    }

    /// Whether `client` may try to authenticate now: looks at its failed-authentication bucket
    /// without taking a token (see the module documentation). `None` (no peer address, as in
    /// in-process tests) is never limited.
    pub async fn admits_address(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        self.charge_address(client, Cost::Look).await
    }

    /// Count a failed authentication from `client`: take a token from its bucket (an error
    /// when none was left).
    pub async fn failed_authentication(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        self.charge_address(client, Cost::Take).await
    }

    async fn charge_address(&self, client: Option<IpAddr>, cost: Cost) -> Result<(), Limited> {
        let (Some(inner), Some(client)) = (&self.inner, client) else {
            return Ok(());
        };
        let bucket = format!("authfail:{}", address_bucket(client));
        inner.take(bucket, inner.limits.auth_fail, cost).await
    }
}

/// What a bucket operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// Only see whether a token is there.
    Look,
    /// Take one.
    Take,
}

/// The failed-authentication bucket of an address: an IPv4 address (or an IPv4-mapped IPv6
/// one) by itself, any other IPv6 address by its /64, the block one host or home is given, so
/// that walking through one's own block does not buy fresh buckets.
fn address_bucket(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Inner {
    /// Run the bucket script on `hypercode:{queue}:{bucket}` with the rate `limit` (0: no
    /// limit) and a burst of twice that; fails open (see the module documentation).
    async fn take(&self, bucket: String, limit: u32, cost: Cost) -> Result<(), Limited> {
        if limit == 0 {
            return Ok(());
        }
        let burst = bucket_size(limit);
        let now_ms = self.elapsed_ms();
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(format!("{}{bucket}", self.prefix));
        invocation
            .arg(limit)
            .arg(burst)
            .arg(u8::from(cost == Cost::Take));
        let outcome =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<u64>(&mut conn))
                .await
                .map_err(|_| format!("no answer within {REDIS_TIMEOUT:?}"))
                .and_then(|reply| reply.map_err(|e| e.to_string()));
        match outcome {
            Ok(wait_ms) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiter: Redis answers again; limits are enforced");
                }
                if wait_ms == 0 {
                    Ok(())
                } else {
                    Err(Limited {
                        limit,
                        burst,
                        retry_after_s: wait_ms.div_ceil(1000).max(1),
                    })
                }
            }
            Err(error) => {
                // Fail open: see the module documentation.
                self.degraded.store(true, Ordering::Relaxed);
                let resume = self.elapsed_ms() + FAIL_OPEN_FOR.as_millis() as u64;
                self.skip_until_ms.store(resume, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    bucket,
                    "rate limiter: Redis is unreachable; letting requests through unlimited"
                );
                Ok(())
            }
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn principal(role: Role) -> Principal {
        Principal {
            key_id: Uuid::now_v7(),
            name: "test".to_owned(),
            role,
            agent: None,
        }
    }

    fn redis_url() -> String {
        std::env::var("HYPERCODE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:56379/".to_owned())
    }

    #[test]
    fn roles_override_the_default() {
        let limits = RateLimits {
            default: 10,
            agent: Some(3),
            viewer: Some(0),
            ..RateLimits::default()
        };
        assert_eq!(limits.rate(Role::Admin), 10);
        assert_eq!(limits.burst(Role::Admin), 20);
        assert_eq!(limits.rate(Role::Agent), 3);
        assert_eq!(limits.burst(Role::Agent), 6);
        assert_eq!(limits.rate(Role::Viewer), 0);
        assert_eq!(RateLimits::default().rate(Role::Operator), 50);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_open() {
        // Port 1 on localhost: nothing listens, the connection is refused.
        let limiter = RateLimiter::new("redis://127.0.0.1:1/", "t", RateLimits::default())
            .expect("a lazy limiter");
        let who = principal(Role::Viewer);
        for _ in 0..5 {
            assert_eq!(limiter.check(&who).await, Ok(()));
        }
    }

    #[tokio::test]
    async fn disabled_and_zero_limits_let_everything_through() {
        let who = principal(Role::Admin);
        for _ in 0..1000 {
            assert_eq!(RateLimiter::disabled().check(&who).await, Ok(()));
        }
        let unlimited = RateLimits {
            default: 0,
            ..RateLimits::default()
        };
        let limiter = RateLimiter::new("redis://127.0.0.1:1/", "t", unlimited).expect("limiter");
        assert_eq!(limiter.check(&who).await, Ok(()));
    }

    /// A TCP proxy to the test Redis that can be cut: returns its URL and the switch.
    async fn cuttable_redis() -> Option<(String, tokio::sync::oneshot::Sender<()>)> {
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        tokio::net::TcpStream::connect(&target).await.ok()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let url = format!("redis://{}/", listener.local_addr().ok()?);
        let (cut, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut cut_rx => break,
                    Ok((mut inbound, _)) = listener.accept() => {
                        let target = target.clone();
                        links.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            // Dropping the listener and aborting the links closes every connection.
            links.abort_all();
        });
        Some((url, cut))
    }

    #[tokio::test]
    async fn redis_lost_mid_run_fails_open_quickly() {
        let (url, cut) = cuttable_redis()
            .await
            .unwrap_or_else(|| panic!("no Redis at {}", redis_url()));
        let limits = RateLimits {
            default: 1,
            ..RateLimits::default()
        };
        let queue = format!("unit-{}", Uuid::new_v4().simple());
        let limiter = RateLimiter::new(&url, &queue, limits).expect("limiter");
        let who = principal(Role::Agent);
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            outcomes.push(limiter.check(&who).await.is_ok());
        }
        assert_eq!(
            outcomes,
            [true, true, false, false],
            "enforced while Redis is up"
        );
        let _ = cut.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(limiter.check(&who).await, Ok(()), "fails open");
        }
        assert!(
            started.elapsed() < REDIS_TIMEOUT * 3,
            "an outage does not slow every request: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn addresses_are_counted_by_host() {
        let bucket = |s: &str| s.parse().map(address_bucket).unwrap_or_default();
        assert_eq!(bucket("192.0.2.7"), "192.0.2.7");
        assert_eq!(bucket("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:ffff::9"), bucket("2001:db8:1:2::1"));
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
    }

    /// A connection to the test Redis; panics without one. CI has one, so a missing Redis is
    /// a failure, never a skip.
    async fn connect_redis() -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .expect("the test Redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("no Redis at {}: {e}", redis_url()))
    }

    #[tokio::test]
    async fn failed_authentication_is_limited_per_address_and_looking_is_free() {
        connect_redis().await;
        let limits = RateLimits {
            auth_fail: 2,
            ..RateLimits::default()
        };
        let queue = format!("unit-{}", Uuid::new_v4().simple());
        let limiter = RateLimiter::new(&redis_url(), &queue, limits).expect("limiter");
        let (here, there) = (
            Some(IpAddr::from([192, 0, 2, 1])),
            Some(IpAddr::from([192, 0, 2, 2])),
        );
        // Looking takes nothing, however often.
        for _ in 0..10 {
            assert_eq!(limiter.admits_address(here).await, Ok(()));
        }
        // A burst of 4 failures, then the address is refused before trying.
        for _ in 0..4 {
            assert_eq!(limiter.failed_authentication(here).await, Ok(()));
        }
        let limited = limiter.admits_address(here).await.expect_err("limited");
        assert_eq!(
            (limited.limit, limited.burst, limited.retry_after_s),
            (2, 4, 1)
        );
        assert_eq!(limiter.admits_address(there).await, Ok(()));
        assert_eq!(limiter.admits_address(None).await, Ok(()));
        // Half a token per 250 ms: a second later the address may try again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(limiter.admits_address(here).await, Ok(()));
    }

    #[tokio::test]
    async fn the_bucket_allows_a_burst_then_refills() {
        let mut conn = connect_redis().await;
        let limits = RateLimits {
            default: 5,
            ..RateLimits::default()
        };
        let queue = format!("unit-{}", Uuid::new_v4().simple());
        let limiter = RateLimiter::new(&redis_url(), &queue, limits).expect("limiter");
        let who = principal(Role::Operator);
        let mut allowed = 0;
        let mut limited = None;
        let started = Instant::now();
        for _ in 0..30 {
            match limiter.check(&who).await {
                Ok(()) => allowed += 1,
                Err(l) => limited = Some(l),
            }
        }
        // A burst of 10, plus what refilled while the loop ran (5 per second).
        let refilled = (5.0 * started.elapsed().as_secs_f64()).floor() as usize;
        assert!((10..=10 + refilled).contains(&allowed), "allowed {allowed}");
        let limited = limited.expect("some requests were limited");
        assert_eq!((limited.limit, limited.burst), (5, 10));
        assert_eq!(limited.retry_after_s, 1);
        // Another key has its own bucket.
        assert_eq!(limiter.check(&principal(Role::Operator)).await, Ok(()));
        // After a refill, requests pass again.
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(limiter.check(&who).await, Ok(()));
        // The bucket expires once it would be full again.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("hypercode:{queue}:ratelimit:{}", who.key_id))
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!((1..=3000).contains(&ttl), "ttl {ttl}");
    }
}
