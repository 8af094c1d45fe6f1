//! The command-line contract: idempotent migrations, key creation output, and secrets given
//! as files (the Docker secrets convention).

mod common;

use common::Harness;
use std::process::Stdio;

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

    let unknown_role = harness
        .command(&["keys", "create", "--name", "x", "--role", "emperor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!unknown_role.status.success());
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

    let from_file = harness
        .command(&["migrate"])
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", &secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );

    let both = harness
        .command(&["migrate"])
        .env("DATABASE_URL_FILE", &secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!both.status.success(), "setting both must be refused");
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("DATABASE_URL")
            && stderr.contains("DATABASE_URL_FILE")
            && stderr.contains("only one"),
        "{stderr}"
    );

    let missing = harness
        .command(&["migrate"])
        .env_remove("DATABASE_URL")
        .env("DATABASE_URL_FILE", harness.dir.join("no-such-file"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DATABASE_URL_FILE"));
}
