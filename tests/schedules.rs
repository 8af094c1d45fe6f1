//! Schedules end to end, on real `serve` processes: three replicas fire each tick of a
//! every-second schedule exactly once and on time, `overlap: skip` holds ticks back while a
//! mission waits for an approval, ticks missed while no `serve` ran follow `catchup`, and the
//! `hypercode schedule` commands drive it all.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// A schedule firing every second.
fn every_second(name: &str, steps: Value, overlap: &str, catchup: &str) -> Value {
    json!({
        "name": name,
        "cron": "* * * * * *",
        "workflow": "plan",
        "input": { "steps": steps },
        "overlap": overlap,
        "catchup": catchup,
    })
}

async fn create(h: &Harness, schedule: &Value) {
    let created = h
        .send(
            h.request(reqwest::Method::POST, "/api/v1/schedules")
                .json(schedule),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
}

async fn set_enabled(h: &Harness, name: &str, enabled: bool) {
    let path = format!("/api/v1/schedules/{name}");
    let changed = h
        .send(
            h.request(reqwest::Method::PATCH, &path)
                .json(&json!({ "enabled": enabled })),
        )
        .await;
    assert_eq!(changed.status, 200, "{changed:?}");
}

/// The schedule's missions, oldest tick first.
async fn missions_of(h: &Harness, name: &str) -> Vec<Value> {
    let page = h
        .send(h.request(
            reqwest::Method::GET,
            &format!("/api/v1/missions?schedule={name}&limit=500"),
        ))
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    let mut missions = page.body["missions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    missions.sort_by_key(|m| time(&m["fire_at"]));
    missions
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
}

/// How late the mission was started after its tick.
fn lateness(mission: &Value) -> chrono::Duration {
    time(&mission["created_at"]) - time(&mission["fire_at"])
}

fn noop() -> Value {
    json!([{ "name": "done", "noop": true }])
}

#[tokio::test]
async fn three_replicas_start_exactly_one_mission_per_tick() {
    let mut h = Harness::start().await;
    h.start_another_serve().await;
    h.start_another_serve().await;
    create(&h, &every_second("tick", noop(), "allow", "once")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    set_enabled(&h, "tick", false).await;

    let missions = missions_of(&h, "tick").await;
    let keys: HashSet<&str> = missions
        .iter()
        .filter_map(|m| m["idempotency_key"].as_str())
        .collect();
    assert_eq!(keys.len(), missions.len(), "one mission per key");
    assert!(
        (9..=11).contains(&missions.len()),
        "a tick a second for 10 s: {} missions",
        missions.len()
    );
    for pair in missions.windows(2) {
        assert_eq!(
            time(&pair[1]["fire_at"]) - time(&pair[0]["fire_at"]),
            chrono::Duration::seconds(1),
            "consecutive ticks, none missing, none twice"
        );
    }
    for mission in &missions {
        let fire_at = time(&mission["fire_at"]);
        assert_eq!(
            mission["idempotency_key"],
            format!(
                "schedule:tick:{}",
                fire_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        );
        assert!(
            lateness(mission) < chrono::Duration::seconds(1),
            "fired within 1 s of its tick: {mission}"
        );
    }
    let last = missions.last().expect("missions");
    h.wait_until(
        &id_of(last),
        "succeeded",
        |m| m["status"] == "succeeded",
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test]
async fn overlap_skip_waits_for_the_live_mission() {
    let h = Harness::start().await;
    let gated = json!([{ "name": "sign-off", "approval": { "message": "go?" } }]);
    create(&h, &every_second("gated", gated, "skip", "once")).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    let missions = missions_of(&h, "gated").await;
    assert_eq!(missions.len(), 1, "one live mission: {missions:?}");
    let first = id_of(&missions[0]);
    h.wait_until(
        &first,
        "waiting",
        |m| m["status"] == "waiting",
        Duration::from_secs(10),
    )
    .await;
    let shown = h
        .send(h.request(reqwest::Method::GET, "/api/v1/schedules/gated"))
        .await;
    let skipped = shown.body["skipped"].as_i64().unwrap_or_default();
    assert!(skipped >= 2, "skipped ticks are counted: {shown:?}");

    let approved = h.decide(&first, "sign-off", "approve", "ok").await;
    assert_eq!(approved.status, 200, "{approved:?}");
    h.wait_until(
        &first,
        "succeeded",
        |m| m["status"] == "succeeded",
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        "the next tick after the first mission finished to fire a new one",
        Duration::from_secs(5),
        || async { missions_of(&h, "gated").await.len() == 2 },
        String::new,
    )
    .await;
    set_enabled(&h, "gated", false).await;
}

#[tokio::test]
async fn ticks_missed_while_no_server_ran_follow_catchup() {
    let mut h = Harness::start().await;
    create(&h, &every_second("caught-up", noop(), "allow", "once")).await;
    create(&h, &every_second("skipped", noop(), "allow", "skip")).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let mut serve = h.serve.take().expect("the serve process");
    serve.kill().await;
    let down_from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.start_serve().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    set_enabled(&h, "caught-up", false).await;
    set_enabled(&h, "skipped", false).await;

    let late = |missions: &[Value]| {
        missions
            .iter()
            .filter(|m| lateness(m) > chrono::Duration::seconds(1))
            .cloned()
            .collect::<Vec<_>>()
    };
    let caught_up = missions_of(&h, "caught-up").await;
    let late_once = late(&caught_up);
    assert_eq!(late_once.len(), 1, "one catch-up mission: {caught_up:?}");
    assert!(
        time(&late_once[0]["fire_at"]) > down_from,
        "for the latest missed tick"
    );
    let skipped = missions_of(&h, "skipped").await;
    assert_eq!(late(&skipped), Vec::<Value>::new(), "no catch-up mission");
    let gap = skipped
        .windows(2)
        .map(|pair| time(&pair[1]["fire_at"]) - time(&pair[0]["fire_at"]))
        .max()
        .unwrap_or_default();
    assert!(
        gap >= chrono::Duration::seconds(4),
        "the outage's ticks were skipped: {skipped:?}"
    );
}

/// Run `hypercode schedule ARGS` as the admin: (exit code, stdout, stderr).
async fn schedule_cli(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    let output = h.client(&all).output().await.expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_manages_schedules() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let file = h.dir.join("nightly.json");
    let body = json!({
        "name": "nightly",
        "cron": "@daily",
        "timezone": "Europe/Berlin",
        "workflow": "plan",
        "input": { "steps": noop() },
    });
    std::fs::write(&file, body.to_string()).expect("write the schedule file");
    let file = file.to_string_lossy().into_owned();

    let (code, out, err) = schedule_cli(&h, &["create", "--file", &file]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nightly") && out.contains("@daily"), "{out}");
    let (code, out, _) = schedule_cli(&h, &["create", "--file", &file]).await;
    assert_eq!(code, 1, "a taken name is refused: {out}");

    let (code, out, err) = schedule_cli(&h, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("NAME") && out.contains("nightly") && out.contains("Europe/Berlin"));

    let (code, out, _) = schedule_cli(&h, &["pause", "nightly", "--json"]).await;
    assert_eq!(code, 0);
    let paused: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(paused["enabled"], false);
    let (code, out, _) = schedule_cli(&h, &["resume", "nightly"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("enabled"), "{out}");

    let (code, out, _) = schedule_cli(&h, &["trigger", "nightly", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let started: Value = serde_json::from_str(&out).expect("--json prints JSON");
    let id = started["id"].as_str().expect("a mission id").to_owned();
    let (code, out, _) = schedule_cli(&h, &["show", "nightly"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&id), "the triggered mission is listed: {out}");
    let (code, out, _) = schedule_cli(&h, &["show", "nightly", "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(shown["recent_missions"][0]["id"], id.as_str());

    let (code, _, _) = schedule_cli(&h, &["delete", "nightly"]).await;
    assert_eq!(code, 0);
    for command in ["show", "pause", "resume", "trigger", "delete"] {
        let (code, _, err) = schedule_cli(&h, &[command, "nightly"]).await;
        assert_eq!(
            code, 1,
            "`schedule {command}` of an unknown name exits 1: {err}"
        );
        assert!(err.contains("404"), "{err}");
    }
}
