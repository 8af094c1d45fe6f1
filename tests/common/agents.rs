//! Reference agents for the tests: a deployment whose heartbeat keys are its own, agents started
//! as `hypercode agent serve` processes that heartbeat with keys bound to their names, and the
//! registry's view of them.

use super::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A deployment whose agent heartbeats live under a prefix of its own (the Redis is shared).
pub async fn deployment(extra: &[(&'static str, &str)]) -> (Harness, String) {
    let prefix = format!("hc-test-agents-{}", random_suffix());
    let mut env = vec![("HYPERCODE_AGENTS_PREFIX", prefix.clone())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let harness = Harness::with(Options {
        env,
        ..Options::default()
    })
    .await;
    (harness, prefix)
}

/// A running reference agent.
pub struct Agent {
    /// Its name.
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The call secret it expects.
    pub secret: String,
    /// The process.
    pub proc: Proc,
}

/// Register agent `name` (admin), create its bound key, and start it heartbeating to the API.
pub async fn start_agent(h: &Harness, name: &str, capabilities: &[&str]) -> Agent {
    let secret = format!("call-secret-{name}-{}", random_suffix());
    let key = agent_key(h, name).await;
    let log = h.dir.join(format!("agent-{name}.log"));
    let stderr = std::fs::File::create(&log).expect("create the agent log");
    let mut args = vec!["agent", "serve", "--name", name, "--listen", "127.0.0.1:0"];
    for capability in capabilities {
        args.extend(["--capability", capability]);
    }
    args.extend(["--register", h.base.as_str()]);
    let mut child = h
        .command(&args)
        .env("HYPERCODE_AGENT_CALL_SECRET", &secret)
        .env("HYPERCODE_API_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn the agent");
    let mut lines = BufReader::new(child.stdout.take().expect("agent stdout")).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.trim().strip_prefix("listening on ") {
                return Some(address.to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("the agent did not print its address:\n{}", tail(&log, 40)));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let reply = h
        .send(h.request(reqwest::Method::POST, "/api/v1/agents").json(
            &json!({"name": name, "url": url, "capabilities": capabilities, "call_secret": secret}),
        ))
        .await;
    assert!(
        matches!(reply.status, 200 | 201),
        "register {name}: {reply:?}"
    );
    let proc = Proc::from_child(format!("agent-{name}"), log, child);
    Agent {
        name: name.to_owned(),
        url,
        secret,
        proc,
    }
}

/// A key of role `agent` bound to `name`.
pub async fn agent_key(h: &Harness, name: &str) -> String {
    let stdout = h
        .cli(&[
            "keys",
            "create",
            "--name",
            &format!("{name}-key"),
            "--role",
            "agent",
            "--agent",
            name,
        ])
        .await;
    stdout.lines().last().unwrap_or_default().trim().to_owned()
}

/// The registry's listing of agent `name`.
pub async fn listed(h: &Harness, name: &str) -> Value {
    let reply = h
        .send(h.request(reqwest::Method::GET, "/api/v1/agents"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Wait until every one of `names` is live.
pub async fn wait_live(h: &Harness, names: &[&str]) {
    for name in names {
        wait_for(
            &format!("agent {name} to be live"),
            Duration::from_secs(20),
            || async { listed(h, name).await["live"] == true },
            String::new,
        )
        .await;
    }
}
