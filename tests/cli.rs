//! The command-line contract: idempotent migrations, key creation output, and secrets given
//! as files (the Docker secrets convention).

mod common;

use common::Harness;
use std::process::{Output, Stdio};
use tokio::process::Command;

async fn output(mut command: Command) -> Output {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run the binary")
}

#[tokio::test]
async fn migrate_is_idempotent_and_keys_print_alone_on_the_last_line() {
    let harness = Harness::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    harness.cli(&["migrate"]).await;
    harness.cli(&["migrate"]).await;

    let stdout = harness
        .cli(&["keys", "create", "--name", "ops", "--role", "operator"])
        .await;
    let last = stdout.lines().last().expect("output");
    assert_eq!(last.len(), 43, "{stdout}");
    assert!(last.starts_with("hc_"));
    assert!(
        last[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{last}"
    );
    let other = harness.create_key("ops2", "viewer").await;
    assert_ne!(other, last, "keys are random");

    let unknown_role =
        output(harness.command(&["keys", "create", "--name", "x", "--role", "emperor"])).await;
    assert!(!unknown_role.status.success());

    // Logged to a pipe, not a terminal: plain text, no colour codes.
    let logged =
        output(harness.command(&["keys", "create", "--name", "ops3", "--role", "viewer"])).await;
    let stderr = String::from_utf8_lossy(&logged.stderr);
    assert!(stderr.contains("API key created"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a piped log: {stderr:?}"
    );
}

#[tokio::test]
async fn secrets_can_come_from_files_but_not_from_both_places() {
    let harness = Harness::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let secret = harness.dir.join("database_url");
    // Secret files usually end with a newline; it is not part of the value.
    std::fs::write(&secret, format!("{}\n", harness.database_url)).unwrap();

    let mut command = harness.command(&["migrate"]);
    command
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", &secret);
    let from_file = output(command).await;
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );

    let mut command = harness.command(&["migrate"]);
    command.env("DATABASE_URL_FILE", &secret);
    let both = output(command).await;
    assert!(!both.status.success(), "setting both must be refused");
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("DATABASE_URL")
            && stderr.contains("DATABASE_URL_FILE")
            && stderr.contains("only one"),
        "{stderr}"
    );

    let mut command = harness.command(&["migrate"]);
    command
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", harness.dir.join("no-such-file"));
    let missing = output(command).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DATABASE_URL_FILE"));
}

/// The default log level: one line per API request, none for the dashboard's assets and the
/// event stream.
#[tokio::test]
async fn the_default_log_has_a_line_per_request_and_none_for_assets_or_streams() {
    let harness = Harness::with(common::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    harness.cli(&["migrate"]).await;
    let key = harness.create_key("logs", "viewer").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = harness.dir.join("default-log.txt");
    let mut command = harness.command(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
    command
        .env_remove("HYPERCODE_LOG")
        .env("HYPERCODE_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .kill_on_drop(true);
    let mut serve = command.spawn().expect("start serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    common::wait_for(
        "serve to answer",
        common::secs(30),
        || {
            let http = http.clone();
            let url = format!("{base}/healthz");
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        },
        || "no answer on /healthz".to_owned(),
    )
    .await;
    // The dashboard's login page names its stylesheet and script.
    let page = http.get(format!("{base}/")).send().await.expect("GET /");
    let html = page.text().await.unwrap_or_default();
    let assets: Vec<String> = html
        .split('"')
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect();
    assert_eq!(assets.len(), 2, "{html}");
    for asset in assets.iter().chain([&"/favicon.svg".to_owned()]) {
        let reply = http
            .get(format!("{base}{asset}"))
            .send()
            .await
            .expect("asset");
        assert!(reply.status().is_success(), "{asset}");
    }
    let listed = http
        .get(format!("{base}/api/v1/missions"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), 200);
    // The event stream: opened, then dropped.
    let stream = http
        .get(format!("{base}/api/v1/events"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status(), 200);
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = serve.start_kill();
    let _ = serve.wait().await;

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("finished processing request"))
        .collect();
    let about = |path: &str| requests.iter().filter(|l| l.contains(path)).count();
    assert_eq!(about("path=/api/v1/missions"), 1, "{text}");
    assert_eq!(about("path=/assets/"), 0, "{text}");
    assert_eq!(about("path=/favicon"), 0, "{text}");
    assert_eq!(about("path=/api/v1/events"), 0, "{text}");
}
