//! The in-process harness: the API router ([`hypercode_api::app`]) over a per-test database
//! from `#[sqlx::test]` and the shared Redis under a queue name of the test's own, called with
//! `tower::ServiceExt::oneshot`. No listener, no child process and no worker: for behaviour
//! that is decided within one request (statuses, validation, roles, problem bodies).
//!
//! Every component is the real one the binary wires (the engine on Postgres, the plan
//! workflow, the Redis wake-up queue, the Redis rate limiter); only the transport is left out.

#![allow(dead_code)]

#[path = "../../../tests/common/shared.rs"]
mod shared;

pub use shared::*;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use hypercode_api::keys::{self, Role};
use hypercode_api::rate_limit::{RateLimiter, RateLimits};
use hypercode_api::AppState;
use hypercode_engine::postgres::PgStore;
use hypercode_engine::{Context, Engine, EngineConfig, Workflow, WorkflowResult};
use hypercode_workers::queue::{QueueConfig, RedisWake, MAX_DEPTH};
use hypercode_workflows::egress::{EgressClient, EgressPolicy};
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// An internal workflow, as the healer's and the payments' are: only the engine starts it.
pub struct EngineOnly;

#[async_trait::async_trait]
impl Workflow for EngineOnly {
    const NAME: &'static str = "engine-only";
    type Input = Value;
    type Output = Value;

    fn internal(&self) -> bool {
        true
    }

    async fn run(&self, _: &mut Context, input: Value) -> WorkflowResult<Value> {
        Ok(input)
    }
}

/// The application state the binary's `serve` builds (with [`EngineOnly`] registered too), on `pool` and the test Redis under
/// `queue`. The one place tests construct an [`AppState`].
pub async fn state(pool: PgPool, queue: &str) -> AppState {
    let queue = QueueConfig {
        redis_url: redis_url(),
        queue: queue.to_owned(),
    };
    let wake = RedisWake::connect(&queue, MAX_DEPTH)
        .await
        .unwrap_or_else(|e| panic!("connect to the test Redis ({}): {e}", queue.redis_url));
    let http = EgressClient::new(
        reqwest::Client::builder(),
        EgressPolicy::new(Vec::new(), Vec::new(), Vec::new()),
    )
    .expect("the egress client");
    let store = Arc::new(PgStore::new(pool.clone()));
    let engine = Engine::new(
        store.clone(),
        hypercode_workflows::registry(&hypercode_workflows::Dependencies {
            http,
            secrets: store,
            healer: hypercode_healer::Toolkit::new(pool.clone(), &queue.redis_url, &queue.queue)
                .expect("a valid Redis URL"),
            agents: Arc::new(
                hypercode_agents::AgentRegistry::new(
                    pool.clone(),
                    &queue.redis_url,
                    hypercode_agents::RegistryConfig {
                        prefix: format!("{}:agents", queue.queue),
                        ..Default::default()
                    },
                )
                .expect("a valid Redis URL"),
            ),
            agent_routing: Default::default(),
            payments: hypercode_payments::Payments::new(
                pool.clone(),
                hypercode_payments::Catalog::default(),
            ),
        })
        .register(EngineOnly),
        Arc::new(wake),
        EngineConfig::default(),
    );
    let limiter = RateLimiter::new(&queue.redis_url, &queue.queue, RateLimits::default())
        .expect("the rate limiter");
    AppState::new(engine, pool, limiter, CancellationToken::new())
}

/// The API of one test, with an admin key.
pub struct Api {
    router: Router,
    /// The test's database.
    pub pool: PgPool,
    /// An admin key.
    pub key: String,
    queue: String,
}

impl Api {
    /// The API on `pool` (a `#[sqlx::test]` database, migrated), with a fresh admin key.
    pub async fn start(pool: PgPool) -> Api {
        let queue = format!("hc-api-test-{}", random_suffix());
        let router = hypercode_api::app(state(pool.clone(), &queue).await);
        let mut api = Api {
            router,
            pool,
            key: String::new(),
            queue,
        };
        api.key = api.create_key("admin", "admin").await;
        api
    }

    /// Create a key with this role and return its secret.
    pub async fn create_key(&self, name: &str, role: &str) -> String {
        let role: Role = role.parse().expect("a role name");
        keys::create(&self.pool, name, role)
            .await
            .expect("create a key")
            .key
    }

    /// Answer one request.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the body");
        Reply::new(status, &content_type, &bytes)
    }

    /// `method path` with `key` (none: anonymous) and a JSON body (none: empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.expect("a valid request")).await
    }

    /// GET with the admin key.
    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.key), None).await
    }

    /// POST a JSON body with the admin key.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(&self.key), Some(body))
            .await
    }

    /// POST a submission body as is, with the admin key.
    pub async fn submit_body(&self, body: &Value) -> Reply {
        self.post("/api/v1/missions", body).await
    }

    /// How many missions the list shows.
    pub async fn mission_count(&self) -> usize {
        let list = self.get("/api/v1/missions?limit=500").await;
        assert_eq!(list.status, 200, "{list:?}");
        list.body["missions"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        on_own_runtime(delete_queue_keys(redis_url(), self.queue.clone()));
    }
}

/// A request with arbitrary headers and a raw body (for what [`Api::call`] cannot say).
pub fn raw(method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Body::from(body.to_owned()))
        .expect("a valid request")
}
