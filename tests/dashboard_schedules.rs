//! Mission Control's Schedules page in headless Chromium: a schedule is listed with its cron in
//! words, its next tick and its last run; an operator triggers it (landing on the new mission,
//! which links back to the schedule), pauses and resumes it; a viewer sees no buttons. Pages are
//! saved as screenshots like the other dashboard tests, also at phone width.

mod browser;
mod common;

use browser::Browser;
use common::*;
use serde_json::json;

#[tokio::test]
async fn schedules_are_listed_triggered_paused_and_resumed() {
    let h = Harness::start().await;
    let olivia = h.create_key("olivia", "operator").await;
    let created = h
        .send(
            h.request(reqwest::Method::POST, "/api/v1/schedules")
                .json(&json!({
                    "name": "nightly",
                    "cron": "0 2 * * *",
                    "timezone": "Europe/Berlin",
                    "workflow": "plan",
                    "input": { "steps": [{ "name": "report", "noop": { "ok": true } }] },
                })),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");

    let b = Browser::start("schedules_are_listed_triggered_paused_and_resumed", &h.base).await;
    assert_eq!(b.login(&olivia).await, "operator");
    b.goto("/schedules").await;
    let row = "#schedules tr#schedule-nightly";
    b.wait_for(row).await;
    assert_eq!(
        b.attr("#nav a[aria-current=page]", "href").await.as_deref(),
        Some("/schedules")
    );
    assert_eq!(
        b.text(&format!("{row} .cron-words")).await,
        "every day at 02:00"
    );
    assert!(b.text(row).await.contains("Europe/Berlin"));
    b.wait_for(&format!("{row} .next-fire time[datetime]"))
        .await;
    assert!(b
        .text(&format!("{row} .last-run"))
        .await
        .contains("not yet"));
    b.screenshot("schedules").await;

    // Trigger now: the new mission's page, which links back to its schedule.
    b.click(&format!("{row} form.trigger button")).await;
    let path = b
        .wait_path("the triggered mission's page", |p| {
            p.starts_with("/missions/")
        })
        .await;
    let id = path.trim_start_matches("/missions/").to_owned();
    b.wait_for("#mission-status[data-status=succeeded]").await;
    assert_eq!(b.text("#mission-schedule").await, "nightly");
    b.screenshot("triggered-mission").await;
    b.click("#mission-schedule").await;
    b.wait_path("the schedules page", |p| p == "/schedules")
        .await;
    b.wait_for(&format!("{row} .last-run a[href=\"/missions/{id}\"]"))
        .await;
    b.wait_for(&format!("{row} .last-run .badge[data-status=succeeded]"))
        .await;

    // Pause, then resume.
    b.click(&format!("{row} form.pause button")).await;
    b.wait_for(&format!("{row}[data-enabled=false]")).await;
    assert!(b
        .text(&format!("{row} .next-fire"))
        .await
        .contains("paused"));
    let shown = h
        .send(h.request(reqwest::Method::GET, "/api/v1/schedules/nightly"))
        .await;
    assert_eq!(shown.body["enabled"], false, "{shown:?}");
    b.screenshot("schedules-paused").await;
    b.click(&format!("{row} form.resume button")).await;
    b.wait_for(&format!(
        "{row}[data-enabled=true] .next-fire time[datetime]"
    ))
    .await;

    b.phone().await;
    b.goto("/schedules").await;
    b.wait_for(row).await;
    b.assert_fits_phone("schedules").await;
    b.screenshot("schedules-phone").await;
    b.desktop().await;

    // A viewer reads the page but gets no buttons.
    let vera = h.create_key("vera", "viewer").await;
    b.logout().await;
    assert_eq!(b.login(&vera).await, "viewer");
    b.goto("/schedules").await;
    b.wait_for(row).await;
    assert_eq!(b.count("form.pause, form.resume, form.trigger").await, 0);
    b.finish().await;
}
