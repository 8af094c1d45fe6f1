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
