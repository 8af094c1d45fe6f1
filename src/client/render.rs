//! Human-readable output of the mission client: every function returns the text to print
//! (ending with a newline), from the API's JSON.

use reqwest::StatusCode;
use serde_json::Value;
use std::fmt::Write as _;

/// Longest a value is shown inline before it is cut with `…`.
const SHORT: usize = 100;

/// A string field, or `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), or `-`.
pub fn time(value: &Value) -> String {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| text(value))
}

/// Compact JSON on one line, cut to [`SHORT`] characters; empty for null and `{}`.
pub fn short(value: &Value) -> String {
    let full = match value {
        Value::Null => return String::new(),
        Value::Object(o) if o.is_empty() => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let full = full.replace('\n', " ");
    if full.chars().count() > SHORT {
        let cut: String = full.chars().take(SHORT - 1).collect();
        format!("{cut}…")
    } else {
        full
    }
}

/// Rows as left-aligned columns separated by two spaces (the last column is not padded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(&cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// The JSON array `items` as a [`table`], one row per item, or `empty` when there is none.
fn listing(
    items: &Value,
    empty: &str,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    match items.as_array() {
        Some(items) if !items.is_empty() => {
            table(header, &items.iter().map(row).collect::<Vec<_>>())
        }
        _ => empty.to_owned(),
    }
}

/// A problem+json body (or any error body) for stderr.
pub fn problem(status: StatusCode, body: &str) -> String {
    let mut out = String::new();
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().filter(|p| p.is_object()) {
        Some(problem) => {
            let title = problem["title"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
            let _ = write!(out, "error: {} ({})", title, status.as_u16());
            if let Some(detail) = problem["detail"].as_str() {
                let _ = write!(out, ": {detail}");
            }
            out.push('\n');
            for error in problem["errors"].as_array().into_iter().flatten() {
                let pointer = error["pointer"].as_str().unwrap_or("");
                let message = error["message"]
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned);
                if pointer.is_empty() {
                    let _ = writeln!(out, "  - {message}");
                } else {
                    let _ = writeln!(out, "  - {pointer}: {message}");
                }
            }
        }
        None => {
            let _ = write!(
                out,
                "error: the server answered {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let body = body.trim();
            if !body.is_empty() {
                let _ = write!(out, ": {}", short(&Value::String(body.to_owned())));
            }
            out.push('\n');
        }
    }
    out
}

/// After `submit`.
pub fn submitted(mission: &Value, repeated: bool) -> String {
    let id = text(&mission["id"]);
    let how = if repeated {
        "already submitted with this idempotency key"
    } else {
        "submitted"
    };
    format!(
        "mission {id} {how} (workflow {}, status {})\n",
        text(&mission["workflow"]),
        text(&mission["status"])
    )
}

/// After `approve` / `reject`.
pub fn decided(mission: &Value, step: &str, approve: bool) -> String {
    format!(
        "{} step {step} of mission {} (mission status {})\n",
        if approve { "approved" } else { "rejected" },
        text(&mission["id"]),
        text(&mission["status"])
    )
}

/// After `cancel`.
pub fn cancelled(mission: &Value) -> String {
    format!(
        "cancellation requested for mission {} (status {}); compensations run on a worker\n",
        text(&mission["id"]),
        text(&mission["status"])
    )
}

/// After `retry`.
pub fn retried(mission: &Value) -> String {
    format!(
        "mission {} will run again from its first failed step (status {})\n",
        text(&mission["id"]),
        text(&mission["status"])
    )
}

/// `workflows`: each workflow's name, then its input schema, indented.
pub fn workflow_list(list: &Value) -> String {
    let Some(workflows) = list["workflows"].as_array().filter(|w| !w.is_empty()) else {
        return "no workflows\n".to_owned();
    };
    let mut out = String::new();
    for workflow in workflows {
        let internal = if workflow["internal"].as_bool() == Some(true) {
            " (internal: started by the engine, not submittable)"
        } else {
            ""
        };
        let _ = writeln!(out, "{}{internal}", text(&workflow["name"]));
        let schema = serde_json::to_string_pretty(&workflow["input_schema"]).unwrap_or_default();
        for line in schema.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// A page of `list`.
pub fn mission_list(page: &Value) -> String {
    let mut out = listing(
        &page["missions"],
        "no missions\n",
        &["ID", "STATUS", "WORKFLOW", "CREATED", "UPDATED"],
        |m| {
            vec![
                text(&m["id"]),
                text(&m["status"]),
                text(&m["workflow"]),
                time(&m["created_at"]),
                time(&m["updated_at"]),
            ]
        },
    );
    if let Some(cursor) = page["next_cursor"].as_str() {
        let _ = writeln!(out, "more: --cursor {cursor}");
    }
    out
}

/// `secrets list`: names and times, never values.
pub fn secret_list(list: &Value) -> String {
    listing(
        &list["secrets"],
        "no secrets\n",
        &["NAME", "CREATED", "UPDATED"],
        |s| {
            vec![
                text(&s["name"]),
                time(&s["created_at"]),
                time(&s["updated_at"]),
            ]
        },
    )
}

/// `schedule list`: one row per schedule.
pub fn schedule_list(list: &Value) -> String {
    listing(
        &list["schedules"],
        "no schedules\n",
        &["NAME", "CRON", "TIMEZONE", "WORKFLOW", "STATE", "NEXT FIRE"],
        |s| {
            vec![
                text(&s["name"]),
                text(&s["cron"]),
                text(&s["timezone"]),
                text(&s["workflow"]),
                schedule_state(s).to_owned(),
                time(&s["next_fire_at"]),
            ]
        },
    )
}

fn schedule_state(schedule: &Value) -> &'static str {
    match schedule["enabled"].as_bool() {
        Some(false) => "paused",
        _ => "enabled",
    }
}

/// `schedule show` (and what create, pause and resume answer): the schedule, then its newest
/// missions when the answer has them.
pub fn schedule(schedule: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "schedule   {}", text(&schedule["name"]));
    let _ = writeln!(
        out,
        "cron       {} ({})",
        text(&schedule["cron"]),
        text(&schedule["timezone"])
    );
    let _ = writeln!(out, "workflow   {}", text(&schedule["workflow"]));
    let _ = writeln!(out, "state      {}", schedule_state(schedule));
    let _ = writeln!(
        out,
        "overlap    {} (skipped ticks: {})",
        text(&schedule["overlap"]),
        text(&schedule["skipped"])
    );
    let _ = writeln!(out, "catchup    {}", text(&schedule["catchup"]));
    let _ = writeln!(out, "next fire  {}", time(&schedule["next_fire_at"]));
    let _ = writeln!(out, "last fire  {}", time(&schedule["last_fire_at"]));
    let input = short(&schedule["input"]);
    if !input.is_empty() {
        let _ = writeln!(out, "input      {input}");
    }
    if let Some(missions) = schedule["recent_missions"].as_array() {
        out.push('\n');
        out.push_str(&listing(
            &Value::Array(missions.clone()),
            "no missions yet\n",
            &["FIRE AT", "STATUS", "MISSION"],
            |m| vec![time(&m["fire_at"]), text(&m["status"]), text(&m["id"])],
        ));
    }
    out
}

/// `show`: the mission, then its steps.
pub fn mission(mission: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mission    {}", text(&mission["id"]));
    let _ = writeln!(out, "workflow   {}", text(&mission["workflow"]));
    let mut status = text(&mission["status"]);
    if mission["cancel_requested"] == Value::Bool(true) {
        status.push_str(" (cancel requested)");
    }
    let _ = writeln!(out, "status     {status}");
    let _ = writeln!(out, "created    {}", time(&mission["created_at"]));
    let _ = writeln!(out, "updated    {}", time(&mission["updated_at"]));
    if let Some(key) = mission["idempotency_key"].as_str() {
        let _ = writeln!(out, "key        {key}");
    }
    if let Some(schedule) = mission["schedule"].as_str() {
        let _ = writeln!(
            out,
            "schedule   {schedule} (tick {})",
            time(&mission["fire_at"])
        );
    }
    if !mission["error"].is_null() {
        let _ = writeln!(out, "error      {}", short(&mission["error"]));
    }
    if !mission["output"].is_null() {
        let _ = writeln!(out, "output     {}", short(&mission["output"]));
    }
    let steps = mission["steps"].as_array().cloned().unwrap_or_default();
    if steps.is_empty() {
        out.push_str("steps      none yet\n");
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let detail = if !s["error"].is_null() {
                format!("error: {}", short(&s["error"]))
            } else if s["status"] == "waiting" && !s["wake_at"].is_null() {
                format!("until {}", time(&s["wake_at"]))
            } else {
                short(&s["output"])
            };
            vec![
                text(&s["name"]),
                text(&s["kind"]),
                text(&s["status"]),
                text(&s["attempts"]),
                time(&s["started_at"]),
                time(&s["finished_at"]),
                detail,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "STEP", "KIND", "STATUS", "ATTEMPTS", "STARTED", "FINISHED", "DETAIL",
        ],
        &rows,
    ));
    out
}

/// `history`: one line per event.
pub fn history(events: &Value) -> String {
    listing(
        events,
        "no events\n",
        &["SEQ", "TIME", "TYPE", "STEP", "ATTEMPT", "DATA"],
        |e| {
            vec![
                text(&e["seq"]),
                time(&e["at"]),
                text(&e["type"]),
                text(&e["step"]),
                text(&e["attempt"]),
                short(&e["data"]),
            ]
        },
    )
}

/// `watch`: one progress line per event.
pub fn event_line(event: &Value) -> String {
    let mut line = format!("{}  {}", time(&event["at"]), text(&event["type"]));
    if let Some(step) = event["step"].as_str() {
        let _ = write!(line, "  step={step}");
    }
    if let Some(attempt) = event["attempt"].as_i64() {
        let _ = write!(line, "  attempt={attempt}");
    }
    let data = short(&event["data"]);
    if !data.is_empty() {
        let _ = write!(line, "  {data}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_show_detail_and_located_errors() {
        let body = json!({
            "type": "https://hypercode.dev/problems/invalid-input", "title": "Invalid mission input",
            "status": 422, "detail": "the workflow refused the input",
            "errors": [{ "pointer": "/input/steps/0/name", "message": "required" }]
        })
        .to_string();
        let text = problem(StatusCode::UNPROCESSABLE_ENTITY, &body);
        assert_eq!(
            text,
            "error: Invalid mission input (422): the workflow refused the input\n  - /input/steps/0/name: required\n"
        );
        let plain = problem(StatusCode::BAD_GATEWAY, "upstream down");
        assert_eq!(
            plain,
            "error: the server answered 502 Bad Gateway: upstream down\n"
        );
    }

    #[test]
    fn events_fit_on_one_line() {
        let event = json!({
            "at": "2025-11-24T16:00:00.5Z", "type": "step_started", "step": "a", "attempt": 2,
            "data": { "input": "x".repeat(300) }
        });
        let line = event_line(&event);
        assert!(line.starts_with("2025-11-24 16:00:00.500  step_started  step=a  attempt=2  {"));
        assert!(line.ends_with('…'), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn tables_align_columns() {
        let out = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(out, "A     BB\nlong  x\n");
    }
}
