//! Limits on what a plan may ask for, end to end: the worker's memory on a long compensated
//! plan, header values checked at submit and after templating, and the approval message cap.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Worker memory ceiling for the 2,000-step plan (the worker idles at ~25 MB).
const RSS_LIMIT_KB: u64 = 100 * 1024;

/// A field of `/proc/<pid>/status`, in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// 2,000 HTTP steps, each with a compensation that references its own output and the first
/// step's, then a step that fails for good: every compensation runs. The worker must stay
/// under 100 MB throughout (checked while it runs, so a leak fails early) and afterwards.
#[tokio::test]
async fn a_2000_step_compensated_plan_keeps_the_worker_under_100_mb() {
    const STEPS: usize = 2000;
    let h = Harness::start().await;
    let mut steps: Vec<Value> = (0..STEPS)
        .map(|i| {
            let name = format!("s{i}");
            json!({
                "name": name,
                "http": { "method": "POST", "url": h.callee.url("/ok") },
                "compensate": { "http": {
                    "method": "DELETE",
                    "url": h.callee.url(&format!("/undo/{{{{steps.{name}.output.body.id}}}}")),
                    "headers": { "X-First": "{{steps.s0.output.body.id}}" }
                } }
            })
        })
        .collect();
    steps.push(http_step("last", "POST", &h.callee.url("/fail")));
    let id = id_of(&h.submit(Value::Array(steps)).await);
    let worker = h.workers[0].pid();

    // The mission JSON carries every step, so poll it gently.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mission = loop {
        let rss = proc_kb(worker, "VmRSS");
        assert!(
            rss < RSS_LIMIT_KB,
            "worker RSS reached {rss} kB after {} callee requests",
            h.callee.requests().len()
        );
        let mission = h.get(&id).await;
        if is_terminal(&mission) {
            break mission;
        }
        assert!(Instant::now() < deadline, "mission did not finish in time");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(mission["status"], "failed", "{}", mission["error"]);
    let compensated = mission["error"]["compensation"]["compensated"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(compensated, STEPS, "{}", mission["error"]["compensation"]);
    // Every undo got its own step's id and the first step's.
    let undone = h.callee.requests();
    let undone: Vec<_> = undone.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(undone.len(), STEPS);
    assert_eq!(undone.last().map(|r| r.path.as_str()), Some("/undo/1"));

    let (peak, now) = (proc_kb(worker, "VmHWM"), proc_kb(worker, "VmRSS"));
    eprintln!("worker memory: peak {peak} kB, after the mission {now} kB");
    assert!(peak < RSS_LIMIT_KB, "worker peak RSS {peak} kB");
    assert!(now < RSS_LIMIT_KB, "worker RSS after the mission {now} kB");
}

/// A header value with CR, LF or another control character, or a header name that is not a
/// token, is refused at submit with a pointer to the header (in a step's request and in its
/// compensation); tabs and non-ASCII (obs-text) bytes are valid values. (NUL never reaches the
/// plan: the API refuses it in any string.)
#[tokio::test]
async fn invalid_header_names_and_values_are_refused_at_submit() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let url = h.callee.url("/ok");
    let reply = h
        .submit_body(&json!({ "workflow": "plan", "input": { "steps": [
            { "name": "a", "http": { "url": url, "headers": { "X-A": "one\r\nX-Injected: two" } } },
            { "name": "b", "http": { "url": url, "headers": { "X A": "fine" } },
              "compensate": { "http": { "url": url, "headers": { "X-B": "bell\u{7}{{steps.b.output.status}}" } } } },
            { "name": "c", "http": { "url": url, "headers": { "X-C": "{{steps.a.output.status}}\n" } } }
        ] } }))
        .await;
    reply.problem(422);
    assert_eq!(
        reply.pointers(),
        [
            "/input/steps/0/http/headers/X-A",
            "/input/steps/1/compensate/http/headers/X-B",
            "/input/steps/1/http/headers/X A",
            "/input/steps/2/http/headers/X-C",
        ],
        "{reply:?}"
    );
    h.submit(json!([{ "name": "a", "http": { "url": url,
        "headers": { "X-A": "tab\tand caf\u{e9}", "X-B": "{{mission.id}}" } } }]))
        .await;
}

/// A header value that only becomes invalid once its template is resolved fails its step for
/// good on the first attempt, though the step allows five: retrying cannot change it.
#[tokio::test]
async fn a_header_made_invalid_by_a_template_fails_its_step_at_once() {
    let h = Harness::start().await;
    let m = h
        .submit(json!([
            { "name": "a", "http": { "method": "POST", "url": h.callee.url("/items/1"),
                                     "body": { "v": "one\r\nX-Injected: two" } } },
            { "name": "b", "http": { "url": h.callee.url("/items/2"),
                                     "headers": { "X-A": "{{steps.a.output.body.body.v}}" } },
              "retry": { "max_attempts": 5, "initial_backoff_ms": 10, "max_backoff_ms": 10 } }
        ]))
        .await;
    let id = id_of(&m);
    let mission = h.wait_terminal(&id, "failed", secs(30)).await;
    let b = step(&mission, "b");
    assert_eq!(b["attempts"], 1, "{}", pretty(&mission));
    assert_eq!(b["error"]["retryable"], false, "{}", pretty(&mission));
    assert!(
        b["error"]["message"].as_str().unwrap_or("").contains("X-A"),
        "{}",
        pretty(&mission)
    );
    assert!(h.callee.to_path("/items/2").is_empty());
}

/// Approval messages are capped at 4096 bytes (UTF-8 bytes, not characters).
#[tokio::test]
async fn approval_messages_over_4096_bytes_are_refused() {
    let h = Harness::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let approval =
        |name: &str, message: String| json!({ "name": name, "approval": { "message": message } });
    let reply = h
        .submit_body(&json!({ "workflow": "plan", "input": { "steps": [
            { "name": "a", "noop": 1 },
            approval("b", "x".repeat(4096)),
            approval("c", "x".repeat(4097)),
            approval("d", "\u{e9}".repeat(2049)),
        ] } }))
        .await;
    let problem = reply.problem(422);
    assert_eq!(
        reply.pointers(),
        [
            "/input/steps/2/approval/message",
            "/input/steps/3/approval/message"
        ],
        "{problem}"
    );
    h.submit(json!([approval("ok", "\u{e9}".repeat(2048))]))
        .await;
}
