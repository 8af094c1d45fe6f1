//! Agents end to end: the registry and its key scope, heartbeats expiring in Redis, plan steps
//! routed by capability to reference agents (`hypercode agent serve` processes), failover when
//! one is killed mid-mission, and a clear failure when no agent is live.

mod common;

use common::agents::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn the_registry_keeps_call_secrets_and_agent_keys_are_scoped() {
    let (h, _) = deployment(&[]).await;
    let register = |body: Value| {
        h.send(
            h.request(reqwest::Method::POST, "/api/v1/agents")
                .json(&body),
        )
    };
    let created = register(json!({"name": "ops-1", "url": "http://127.0.0.1:9/", "capabilities": ["devops"], "call_secret": "s3cret-value"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["url"], "http://127.0.0.1:9");
    assert_eq!(created.body["live"], false);
    let again = register(json!({"name": "ops-1", "url": "http://127.0.0.1:9", "capabilities": ["devops", "echo"], "call_secret": "s3cret-value"})).await;
    assert_eq!(again.status, 200, "{again:?}");
    let bad = register(
        json!({"name": "-x", "url": "ftp://h", "capabilities": ["a/b"], "call_secret": ""}),
    )
    .await;
    bad.problem(422);
    assert_eq!(
        bad.pointers(),
        ["/name", "/url", "/capabilities/0", "/call_secret"]
    );

    let viewer = h.create_key("watcher", "viewer").await;
    let listing = h
        .send(h.request_as(reqwest::Method::GET, "/api/v1/agents", &viewer))
        .await;
    assert_eq!(listing.status, 200, "{listing:?}");
    let text = listing.body.to_string();
    assert!(
        !text.contains("s3cret-value"),
        "a call secret leaked: {text}"
    );
    let agent = &listing.body["agents"][0];
    for field in [
        "name",
        "url",
        "capabilities",
        "live",
        "last_heartbeat",
        "in_flight",
    ] {
        assert!(agent.get(field).is_some(), "{field} missing: {agent}");
    }
    assert_eq!(agent["capabilities"], json!(["devops", "echo"]));
    assert!(agent["last_heartbeat"].is_null());
    h.send(
        h.request_as(reqwest::Method::POST, "/api/v1/agents", &viewer)
            .json(&json!({})),
    )
    .await
    .forbidden("admin", "viewer", "register an agent");

    // An agent key beats for its own agent only, and does nothing else but signal.
    let key = agent_key(&h, "ops-1").await;
    let beat = h
        .send(
            h.request_as(
                reqwest::Method::POST,
                "/api/v1/agents/ops-1/heartbeat",
                &key,
            )
            .json(&json!({"in_flight": 3})),
        )
        .await;
    assert_eq!(beat.status, 200, "{beat:?}");
    assert_eq!(beat.body["live"], true);
    assert_eq!(beat.body["in_flight"], 3);
    assert!(beat.body["last_heartbeat"].is_string());
    register(json!({"name": "ops-2", "url": "http://127.0.0.1:9", "capabilities": ["devops"], "call_secret": "x"})).await;
    let other = h
        .send(
            h.request_as(
                reqwest::Method::POST,
                "/api/v1/agents/ops-2/heartbeat",
                &key,
            )
            .json(&json!({})),
        )
        .await;
    other.problem(403);
    assert!(
        other.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("ops-1"),
        "{other:?}"
    );
    assert_eq!(listed(&h, "ops-2").await["live"], false);
    let submit = h
        .send(
            h.request_as(reqwest::Method::POST, "/api/v1/missions", &key)
                .json(&json!({"workflow": "plan", "input": {"steps": [{"name": "a", "noop": 1}]}})),
        )
        .await;
    submit.forbidden("operator or admin", "agent", "submit a mission");
    h.send(h.request_as(reqwest::Method::GET, "/api/v1/agents", &key))
        .await
        .problem(403);
    let viewer_beat = h
        .send(
            h.request_as(
                reqwest::Method::POST,
                "/api/v1/agents/ops-1/heartbeat",
                &viewer,
            )
            .json(&json!({})),
        )
        .await;
    viewer_beat.forbidden("agent or admin", "viewer", "heartbeat");
    let unknown = h
        .send(
            h.request(reqwest::Method::POST, "/api/v1/agents/nobody/heartbeat")
                .json(&json!({})),
        )
        .await;
    unknown.problem(404);

    // `--agent` only binds keys of role agent.
    let refused = h
        .command(&[
            "keys", "create", "--name", "x", "--role", "operator", "--agent", "ops-1",
        ])
        .output()
        .await
        .expect("run keys create");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("role `agent`"));

    let deleted = h
        .send(h.request(reqwest::Method::DELETE, "/api/v1/agents/ops-1"))
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    h.send(h.request(reqwest::Method::DELETE, "/api/v1/agents/ops-1"))
        .await
        .problem(404);
    assert!(listed(&h, "ops-1").await.is_null());
}

#[tokio::test]
async fn a_heartbeat_lives_in_redis_for_its_ttl() {
    let (h, prefix) = deployment(&[("HYPERCODE_AGENT_HEARTBEAT_TTL_S", "2")]).await;
    let reply = h
        .send(h.request(reqwest::Method::POST, "/api/v1/agents").json(
            &json!({"name": "brief", "url": "http://127.0.0.1:9", "capabilities": ["echo"], "call_secret": "x"}),
        ))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let key = agent_key(&h, "brief").await;
    let beat = h
        .send(
            h.request_as(
                reqwest::Method::POST,
                "/api/v1/agents/brief/heartbeat",
                &key,
            )
            .json(&json!({})),
        )
        .await;
    assert_eq!(beat.status, 200, "{beat:?}");
    let client = redis::Client::open(h.redis_url.as_str()).expect("redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:heartbeat:brief"))
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!(
        (1..=2000).contains(&ttl_ms),
        "TTL of the heartbeat key: {ttl_ms} ms"
    );
    assert_eq!(listed(&h, "brief").await["live"], true);
    wait_for(
        "the heartbeat to expire",
        Duration::from_secs(10),
        || async { listed(&h, "brief").await["live"] == false },
        String::new,
    )
    .await;
    let after = listed(&h, "brief").await;
    assert!(after["last_heartbeat"].is_string(), "{after}");
    assert_eq!(after["in_flight"], 0);
}

/// The agent named in a step's output.
fn answered_by(mission: &Value, step_name: &str) -> String {
    step(mission, step_name)["output"]["agent"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn steps_are_routed_by_capability_and_fail_over_when_an_agent_dies() {
    let (h, _) = deployment(&[]).await;
    let mut shouter = start_agent(&h, "shouter", &["upper"]).await;
    let _loud = start_agent(&h, "loud", &["upper"]).await;
    let _parrot = start_agent(&h, "parrot", &["echo"]).await;
    wait_live(&h, &["shouter", "loud", "parrot"]).await;
    let upper = |name: &str, command: &str| {
        json!({"name": name, "agent": {"capability": "upper", "command": command, "timeout_s": 5},
               "retry": {"max_attempts": 4, "initial_backoff_ms": 100, "max_backoff_ms": 200}})
    };
    let mission = h
        .submit(json!([
            {"name": "word", "noop": {"text": "hello agents"}},
            upper("shout", "{{steps.word.output.text}}"),
            {"name": "repeat", "agent": {"capability": "echo", "input": {"n": 1, "said": "{{steps.shout.output.output}}"}}},
            {"name": "go", "signal": {"timeout_s": 60}},
            upper("after-1", "one"),
            upper("after-2", "two"),
        ]))
        .await;
    let id = id_of(&mission);
    let waiting = h
        .wait_until(
            &id,
            "waiting for `go`",
            |m| step_is(m, "go", "waiting"),
            Duration::from_secs(30),
        )
        .await;
    let shout = step(&waiting, "shout");
    assert_eq!(
        shout["output"]["output"],
        "HELLO AGENTS",
        "{}",
        pretty(&waiting)
    );
    assert!(
        ["shouter", "loud"].contains(&answered_by(&waiting, "shout").as_str()),
        "{}",
        pretty(&waiting)
    );
    assert_eq!(
        step(&waiting, "repeat")["output"],
        json!({"agent": "parrot", "output": {"n": 1, "said": "HELLO AGENTS"}})
    );

    // Kill one `upper` agent while it is still live in the registry (its key outlives it).
    shouter.proc.kill().await;
    let signal = h
        .send(
            h.request(
                reqwest::Method::POST,
                &format!("/api/v1/missions/{id}/signals/go"),
            )
            .json(&json!({})),
        )
        .await;
    assert!(signal.status < 300, "{signal:?}");
    let done = h
        .wait_terminal(&id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(answered_by(&done, "after-1"), "loud", "{}", pretty(&done));
    assert_eq!(answered_by(&done, "after-2"), "loud", "{}", pretty(&done));
    assert_eq!(step(&done, "after-2")["output"]["output"], "TWO");
    // Routing takes turns, so one of the two steps first went to the dead agent and failed
    // over on its retry.
    let history = h.history(&id).await;
    let failed_over = events_of(&history, "step_failed")
        .into_iter()
        .chain(events_of(&history, "step_retry_scheduled"))
        .any(|e| e.to_string().contains("agent `shouter`"));
    assert!(failed_over, "{}", describe_history(&history));
    assert_eq!(listed(&h, "shouter").await["live"], true);

    // An agent's key reads the missions its agent answered, and no others.
    let loud = agent_key(&h, "loud").await;
    for path in [
        format!("/api/v1/missions/{id}"),
        format!("/api/v1/missions/{id}/history"),
    ] {
        let read = h
            .send(h.request_as(reqwest::Method::GET, &path, &loud))
            .await;
        assert_eq!(read.status, 200, "{path}: {read:?}");
        let stranger = agent_key(&h, "stranger").await;
        h.send(h.request_as(reqwest::Method::GET, &path, &stranger))
            .await
            .problem(404);
    }
    h.send(h.request_as(reqwest::Method::GET, "/api/v1/missions", &loud))
        .await
        .problem(403);
}

#[tokio::test]
async fn a_step_without_a_live_agent_fails_clearly() {
    let (h, _) = deployment(&[]).await;
    let _echo = start_agent(&h, "lonely", &["echo"]).await;
    wait_live(&h, &["lonely"]).await;
    let mission = h
        .submit(json!([
            {"name": "ask", "agent": {"capability": "translate", "command": "bonjour"},
             "retry": {"max_attempts": 2, "initial_backoff_ms": 50, "max_backoff_ms": 50}}
        ]))
        .await;
    let done = h
        .wait_terminal(&id_of(&mission), "failed", Duration::from_secs(30))
        .await;
    let text = done.to_string();
    assert!(
        text.contains(r#"no live agent with capability \"translate\""#),
        "{}",
        pretty(&done)
    );
    assert_eq!(step(&done, "ask")["attempts"], 2, "{}", pretty(&done));
}

/// The `agents` row of `name`: its plain and its sealed call secret.
async fn stored_secret(pool: &sqlx::PgPool, name: &str) -> (Option<String>, Option<Vec<u8>>) {
    sqlx::query_as("select call_secret, call_secret_sealed from agents where name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("the agent's row")
}

#[tokio::test]
async fn call_secrets_are_sealed_at_rest_and_plain_ones_are_sealed_at_startup() {
    let (mut h, _) = deployment(&[("HYPERCODE_SECRETS_KEY", "a test sealing passphrase")]).await;
    let agent = start_agent(&h, "sealed", &["upper"]).await;
    wait_live(&h, &["sealed"]).await;
    let pool = sqlx::PgPool::connect(&h.database_url)
        .await
        .expect("connect to the test database");
    let (plain, sealed) = stored_secret(&pool, "sealed").await;
    assert_eq!(plain, None);
    let sealed = sealed.expect("a sealed call secret");
    // Sealed with the configured key (`c`), and nowhere in plain text.
    assert_eq!(sealed.first(), Some(&b'c'));
    assert!(
        !sealed
            .windows(agent.secret.len())
            .any(|w| w == agent.secret.as_bytes()),
        "the call secret is stored in plain text"
    );
    let shout = |command: &str| {
        json!([{"name": "shout", "agent": {"capability": "upper", "command": command, "timeout_s": 5},
                "retry": {"max_attempts": 2, "initial_backoff_ms": 100, "max_backoff_ms": 100}}])
    };
    // The call carries the secret the agent expects (it answers 401 to any other).
    let mission = h.submit(shout("sealed")).await;
    let mission = h
        .wait_terminal(&id_of(&mission), "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(step(&mission, "shout")["output"]["output"], "SEALED");

    // A row as written before secrets were sealed: read as it is...
    sqlx::query("update agents set call_secret = $2, call_secret_sealed = null where name = $1")
        .bind("sealed")
        .bind(&agent.secret)
        .execute(&pool)
        .await
        .expect("store the secret in plain text");
    let mission = h.submit(shout("plain")).await;
    let mission = h
        .wait_terminal(&id_of(&mission), "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(step(&mission, "shout")["output"]["output"], "PLAIN");
    // ...and sealed by the next server to start.
    h.start_another_serve().await;
    let (plain, sealed) = stored_secret(&pool, "sealed").await;
    assert_eq!(plain, None);
    assert!(sealed.is_some_and(|s| s.first() == Some(&b'c')));
    let mission = h.submit(shout("resealed")).await;
    let mission = h
        .wait_terminal(&id_of(&mission), "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(step(&mission, "shout")["output"]["output"], "RESEALED");
}
