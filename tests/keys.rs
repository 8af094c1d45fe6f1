//! API key management from the command line (`keys create|list|revoke`), revocation taking
//! effect with the very next request, and keys never showing up after creation: not in
//! `keys list`, not in API responses, not in any process's log.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Output, Stdio};

async fn run(h: &Harness, args: &[&str]) -> Output {
    h.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keys list --json`, parsed.
async fn listing(h: &Harness) -> Vec<Value> {
    let stdout = h.cli(&["keys", "list", "--json"]).await;
    let parsed: Value = serde_json::from_str(stdout.trim()).expect("keys list --json is JSON");
    parsed.as_array().cloned().expect("a JSON array")
}

fn named<'a>(keys: &'a [Value], name: &str) -> &'a Value {
    keys.iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key `{name}` listed: {keys:?}"))
}

async fn list_missions(h: &Harness, key: &str) -> Reply {
    h.send(
        h.http
            .get(h.url("/api/v1/missions"))
            .header("X-API-Key", key),
    )
    .await
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let key = h.create_key("temp", "operator").await;
    let keeper = h.create_key("keeper", "operator").await;
    assert_eq!(list_missions(&h, &key).await.status, 200);
    let bearer = h
        .send(
            h.http
                .get(h.url("/api/v1/missions"))
                .header("Authorization", format!("Bearer {key}")),
        )
        .await;
    assert_eq!(bearer.status, 200, "{bearer:?}");

    let id = named(&listing(&h).await, "temp")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let revoked = run(&h, &["keys", "revoke", &id]).await;
    assert!(
        revoked.status.success(),
        "keys revoke: {}",
        text(&revoked.stderr)
    );
    assert!(
        text(&revoked.stdout).contains(&id),
        "{}",
        text(&revoked.stdout)
    );

    // The very next request, by either header, is refused; other keys are unaffected.
    list_missions(&h, &key).await.problem(401);
    h.send(
        h.http
            .post(h.url("/api/v1/missions"))
            .header("Authorization", format!("Bearer {key}"))
            .json(
                &json!({ "workflow": "plan", "input": { "steps": [{ "name": "a", "noop": 1 }] } }),
            ),
    )
    .await
    .problem(401);
    assert_eq!(list_missions(&h, &keeper).await.status, 200);

    let listed = listing(&h).await;
    assert_eq!(named(&listed, "temp")["revoked"], true);
    assert!(named(&listed, "temp")["revoked_at"].is_string());
    assert_eq!(named(&listed, "keeper")["revoked"], false);

    // Revoking again, an unknown id or something that is not an id: a clear message, exit 1.
    let again = run(&h, &["keys", "revoke", &id]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already revoked"),
        "{}",
        text(&again.stderr)
    );
    let unknown_id = uuid::Uuid::new_v4().to_string();
    for unknown in [unknown_id.as_str(), "not-an-id"] {
        let reply = run(&h, &["keys", "revoke", unknown]).await;
        assert_eq!(reply.status.code(), Some(1), "revoke {unknown}");
        let stderr = text(&reply.stderr);
        assert!(
            stderr.contains("no API key") && stderr.contains(unknown),
            "{stderr}"
        );
    }
    // The failed attempts changed nothing.
    assert_eq!(list_missions(&h, &keeper).await.status, 200);
}

#[tokio::test]
async fn keys_list_shows_every_key_but_no_secret() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut secrets = vec![h.key.clone()];
    for (name, role) in [("olga", "operator"), ("bot", "agent"), ("vera", "viewer")] {
        secrets.push(h.create_key(name, role).await);
    }

    let listed = listing(&h).await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    for (name, role) in [
        ("e2e-admin", "admin"),
        ("olga", "operator"),
        ("bot", "agent"),
        ("vera", "viewer"),
    ] {
        let key = named(&listed, name);
        assert_eq!(key["role"], role, "{key}");
        assert!(
            uuid::Uuid::parse_str(key["id"].as_str().unwrap_or("")).is_ok(),
            "{key}"
        );
        assert!(key["created_at"].is_string(), "{key}");
        assert_eq!(key["revoked"], false, "{key}");
        let fields: Vec<&String> = key
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            ["created_at", "id", "name", "revoked", "revoked_at", "role"],
            "{key}"
        );
    }

    let table = h.cli(&["keys", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and a line per key:\n{table}");
    for column in ["ID", "NAME", "ROLE", "CREATED_AT", "REVOKED"] {
        assert!(lines[0].contains(column), "{table}");
    }
    for key in &listed {
        let line = lines
            .iter()
            .find(|l| l.contains(key["id"].as_str().unwrap_or("?")))
            .unwrap_or_else(|| panic!("{key} is not in the table:\n{table}"));
        assert!(line.contains(key["name"].as_str().unwrap_or("?")), "{line}");
        assert!(line.contains(key["role"].as_str().unwrap_or("?")), "{line}");
        assert!(line.trim_end().ends_with("no"), "{line}");
    }

    let json = h.cli(&["keys", "list", "--json"]).await;
    for secret in &secrets {
        assert!(!table.contains(secret.as_str()) && !json.contains(secret.as_str()));
        // Not even part of one.
        assert!(!table.contains(&secret[3..20]) && !json.contains(&secret[3..20]));
    }
    assert!(
        !table.contains("hc_") && !json.contains("hc_"),
        "{table}\n{json}"
    );
}

/// Every path a key takes (creation, authentication by both headers, a wrong, a revoked and a
/// forbidden key, rate limiting, a mission run to completion) with debug logging everywhere:
/// afterwards no log file of any process holds a key, and no response did either.
#[tokio::test]
async fn no_key_appears_in_any_log_or_response() {
    let mut h = Harness::with(Options {
        workers: 1,
        env: vec![
            ("HYPERCODE_LOG", "debug".to_owned()),
            ("HYPERCODE_RATE_LIMIT_VIEWER", "1".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let second = h.start_another_serve().await;

    let mut secrets = vec![h.key.clone()];
    let mut outputs = Vec::new();
    for (name, role) in [("olga", "operator"), ("bot", "agent"), ("vera", "viewer")] {
        let created = run(&h, &["keys", "create", "--name", name, "--role", role]).await;
        assert!(created.status.success(), "{}", text(&created.stderr));
        let stdout = text(&created.stdout);
        let key = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(key.starts_with("hc_") && key.len() == 43, "{stdout}");
        // The key is printed once, alone on the last line of stdout, and nowhere else.
        assert_eq!(stdout.matches(key.as_str()).count(), 1, "{stdout}");
        assert!(!text(&created.stderr).contains(&key));
        secrets.push(key);
    }
    let (operator, agent, viewer) = (&secrets[1], &secrets[2], &secrets[3]);

    let mut replies: Vec<Seen> = Vec::new();
    let m = h
        .submit(json!([
            http_step("call", "POST", &h.callee.url("/ok")),
            { "name": "gate", "approval": { "message": "?" } },
        ]))
        .await;
    let id = id_of(&m);
    h.wait_until(&id, "waiting", |m| m["status"] == "waiting", secs(15))
        .await;
    replies.push(
        h.decide_as(operator, &id, "gate", "approve", "ok")
            .await
            .into(),
    );
    replies.push(
        h.wait_terminal(&id, "succeeded", secs(15))
            .await
            .to_string()
            .into(),
    );
    replies.push(Value::Array(h.history(&id).await).into());
    for key in [operator, agent, viewer, viewer, viewer, viewer] {
        for base in [&h.base, &second] {
            for path in [
                "/api/v1/missions".to_owned(),
                format!("/api/v1/missions/{id}"),
            ] {
                replies.push(
                    h.send(
                        h.http
                            .get(format!("{base}{path}"))
                            .header("Authorization", format!("Bearer {key}")),
                    )
                    .await
                    .into(),
                );
            }
        }
    }
    // A well-formed key that does not exist, then a revoked one.
    let forged = format!("hc_{}", "A".repeat(40));
    replies.push(list_missions(&h, &forged).await.into());
    let olga = named(&listing(&h).await, "olga")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let revoked = run(&h, &["keys", "revoke", &olga]).await;
    assert!(revoked.status.success());
    outputs.push(text(&revoked.stdout) + &text(&revoked.stderr));
    replies.push(list_missions(&h, operator).await.into());
    let list = run(&h, &["keys", "list"]).await;
    outputs.push(text(&list.stdout) + &text(&list.stderr));

    let statuses: Vec<u16> = replies.iter().filter_map(|r| r.status).collect();
    for status in [200, 401, 403, 429] {
        assert!(
            statuses.contains(&status),
            "{status} not exercised: {statuses:?}"
        );
    }

    // Mark the end of the run in each API server's log: a request to a path of its own, which
    // the server logs with its path when it answers. Each earlier request was logged before
    // its answer reached this test, so once both logs show the marker, every line about a key
    // is written. (The worker never sees a key: its log is scanned as it is.)
    let marker = format!("/log-marker-{}", uuid::Uuid::new_v4().simple());
    for base in [&h.base, &second] {
        let reply = h.send(h.http.get(format!("{base}{marker}"))).await;
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    let serve_logs: Vec<_> = h.serve.iter().chain(&h.other_serves).collect();
    let logged = |proc: &Proc| {
        std::fs::read_to_string(&proc.log)
            .unwrap_or_default()
            .contains(&marker)
    };
    wait_for(
        "both API servers to log the marker request",
        secs(10),
        || async { serve_logs.iter().all(|proc| logged(proc)) },
        || {
            serve_logs
                .iter()
                .map(|proc| format!("{}:\n{}", proc.name, tail(&proc.log, 5)))
                .collect()
        },
    )
    .await;
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(&h.dir).expect("the log directory") {
        let path = entry.expect("a log entry").path();
        logs.push((
            path.clone(),
            std::fs::read_to_string(&path).unwrap_or_default(),
        ));
    }
    assert!(
        logs.len() >= 3,
        "serve, a second serve and a worker: {logs:?}"
    );
    assert!(
        logs.iter().map(|(_, text)| text.len()).sum::<usize>() > 10_000,
        "debug logging produced little output; is HYPERCODE_LOG honoured?"
    );
    for secret in secrets.iter().chain([&forged]) {
        for (path, text) in &logs {
            assert!(
                !text.contains(secret.as_str()),
                "a key appears in {}",
                path.display()
            );
        }
        for output in &outputs {
            assert!(!output.contains(secret.as_str()), "{output}");
        }
        for reply in &replies {
            assert!(!reply.text.contains(secret.as_str()), "{}", reply.text);
        }
    }
}

/// A response reduced to what this test checks.
struct Seen {
    status: Option<u16>,
    text: String,
}

impl From<Reply> for Seen {
    fn from(reply: Reply) -> Self {
        Seen {
            status: Some(reply.status),
            text: format!("{} {}", reply.content_type, reply.body),
        }
    }
}

impl From<Value> for Seen {
    fn from(value: Value) -> Self {
        Seen {
            status: None,
            text: value.to_string(),
        }
    }
}

impl From<String> for Seen {
    fn from(text: String) -> Self {
        Seen { status: None, text }
    }
}
