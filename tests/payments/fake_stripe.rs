//! A local stand-in for Stripe's API (this machine cannot reach Stripe): it answers
//! `POST /v1/checkout/sessions` as Stripe does, with a Checkout Session object (or Stripe's
//! error object for the price `price_missing`), answers a repeated `Idempotency-Key` with the
//! answer that key got first, and records every request (path, headers, form fields). It also
//! plays a fulfilment service for shop items: `POST /grants/ok` answers 200, `/grants/fail` 400.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path.
    pub path: String,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// The form fields of a Stripe request (`line_items[0][price]` ...), in order.
    pub form: Vec<(String, String)>,
    /// The JSON body of a grant.
    pub json: Value,
}

impl Seen {
    /// The form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    seen: Mutex<Vec<Seen>>,
    answered: Mutex<HashMap<String, (StatusCode, Value)>>,
    counter: Mutex<u64>,
}

/// The fake, listening on 127.0.0.1.
pub struct FakeStripe {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeStripe {
    /// Bind a port and serve.
    pub async fn start() -> FakeStripe {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .route("/grants/{outcome}", post(grant))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Stripe");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake Stripe");
        });
        FakeStripe { base, inner }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("lock").clone()
    }

    /// Requests to `path`.
    pub fn to_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

fn record(inner: &Inner, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Seen {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = Seen {
        path: uri.path().to_owned(),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        form: url::form_urlencoded::parse(body).into_owned().collect(),
        json: serde_json::from_slice(body).unwrap_or(Value::Null),
    };
    inner.seen.lock().expect("lock").push(seen.clone());
    seen
}

/// `POST /v1/checkout/sessions`, answered like Stripe.
async fn create_session(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = record(&inner, &uri, &headers, &body);
    if let Some(key) = &seen.idempotency_key {
        if let Some((status, body)) = inner.answered.lock().expect("lock").get(key).cloned() {
            return (status, axum::Json(body)).into_response();
        }
    }
    let (status, answer) = if seen.field("line_items[0][price]") == Some("price_missing") {
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "line_items[0][price]",
                "message": "No such price: 'price_missing'",
            }}),
        )
    } else {
        let n = {
            let mut counter = inner.counter.lock().expect("lock");
            *counter += 1;
            *counter
        };
        let id = format!("cs_test_{n:04}");
        let now = chrono::Utc::now().timestamp();
        let metadata: serde_json::Map<String, Value> = seen
            .form
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("metadata[")
                    .and_then(|k| k.strip_suffix(']'))
                    .map(|k| (k.to_owned(), Value::String(v.clone())))
            })
            .collect();
        (
            StatusCode::OK,
            json!({
                "id": id,
                "object": "checkout.session",
                "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
                "cancel_url": seen.field("cancel_url"),
                "client_reference_id": seen.field("client_reference_id"),
                "created": now,
                "currency": "usd",
                "custom_fields": [],
                "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
                "expires_at": now + 86_400,
                "livemode": false,
                "metadata": metadata,
                "mode": seen.field("mode"),
                "payment_method_types": ["card"],
                "payment_status": "unpaid",
                "shipping_options": [],
                "status": "open",
                "success_url": seen.field("success_url"),
                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
            }),
        )
    };
    if let Some(key) = seen.idempotency_key {
        inner
            .answered
            .lock()
            .expect("lock")
            .insert(key, (status, answer.clone()));
    }
    (status, axum::Json(answer)).into_response()
}

/// `POST /grants/ok` and `/grants/fail`: a fulfilment service.
async fn grant(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&inner, &uri, &headers, &body);
    if uri.path().ends_with("/ok") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}
