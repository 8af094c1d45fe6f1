//! What the process-level harness (`tests/common`) and the in-process one (`api/tests/common`)
//! share: where the test Redis is, an API answer with its problem-body assertions, and the
//! clean-up of a test's Redis keys. Included by path from both, so there is one copy.

use serde_json::Value;

/// The Redis every test shares (each with its own queue name).
pub fn redis_url() -> String {
    std::env::var("HYPERCODE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:56379/".to_owned())
}

/// A fresh name part, for databases and queues.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The Content-Type of a response ("" when it has none).
pub fn content_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A response from the API.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The Content-Type header.
    pub content_type: String,
    /// The body as JSON (`Null` if empty, a string if it is not JSON).
    pub body: Value,
}

impl Reply {
    /// A reply from its parts, the body parsed as JSON where it is JSON.
    pub fn new(status: u16, content_type: &str, bytes: &[u8]) -> Reply {
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
        };
        Reply {
            status,
            content_type: content_type.to_owned(),
            body,
        }
    }

    /// Assert an RFC 9457 problem with this status; returns the body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "not a problem+json response: {self:?}"
        );
        for field in ["type", "title", "detail"] {
            assert!(
                self.body[field].is_string(),
                "problem field `{field}` missing: {self:?}"
            );
        }
        assert_eq!(self.body["status"], status, "problem `status`: {self:?}");
        &self.body
    }

    /// Assert a 403 problem naming `required` (the roles that would do) and the caller's
    /// `role`; `what` names the request in the failure message.
    pub fn forbidden(&self, required: &str, role: &str, what: &str) {
        let body = self.problem(403);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(required) && detail.contains(&format!("the {role} role")),
            "{what} as {role}: the 403 must name the required role(s) `{required}` and the key's role: {self:?}"
        );
        assert_eq!(body["type"], "https://hypercode.dev/problems/forbidden");
    }

    /// The pointers of a validation problem's `errors`.
    pub fn pointers(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["pointer"].as_str().unwrap_or("<none>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Run `clean_up` to completion on a thread and runtime of its own: for `Drop`s, which cannot
/// await, while the test's runtime may be shutting down.
pub fn on_own_runtime(clean_up: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(clean_up);
    })
    .join();
}

/// Delete the Redis keys of a test's queue: they all start with its name, or with
/// `hypercode:{queue}:` (the rate limiter's buckets).
pub async fn delete_queue_keys(url: String, queue: String) {
    let (url, queue) = (url.as_str(), queue.as_str());
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    for pattern in [format!("{queue}*"), format!("hypercode:{queue}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(100) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
    // apalis also lists every queue it has seen in one shared sorted set.
    let _: Result<i64, _> = redis::cmd("ZREM")
        .arg("core:apalis:queues:list")
        .arg(format!("{queue}:workers"))
        .query_async(&mut conn)
        .await;
}
