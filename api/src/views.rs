//! The response bodies. They are the public JSON contract, so they are spelled out here rather
//! than reusing the engine's records: a field added to storage does not leak onto the wire.
//!
//! Building a view is also where secrets leave the data: every input, output, error and event
//! detail is passed through [`redact`] (credential headers, secret fields and URL userinfo read
//! `[redacted]`), for every role. The stored records keep the real values, which workers need.

use chrono::{DateTime, Utc};
use hypercode_engine::schedule::{Catchup, Overlap};
use hypercode_engine::store::{
    MissionRecord, ScheduleRecord, ScheduledMission, SecretInfo, StepRecord, WaitingApproval,
};
use hypercode_engine::{redact, Event, EventType, MissionId, MissionStatus, StepKind, StepStatus};
use hypercode_payments::{Entitlement, Entry, EntryKind, Subscription};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A mission, as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MissionView {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: MissionId,
    /// The workflow it runs.
    pub workflow: String,
    /// Where it is.
    #[schema(schema_with = crate::openapi::mission_status)]
    pub status: MissionStatus,
    /// Its input.
    pub input: Value,
    /// Its output, once succeeded.
    pub output: Option<Value>,
    /// Its error, once failed or cancelled.
    pub error: Option<Value>,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// Its concurrency key: it runs only after every earlier live mission of the key finished.
    pub concurrency_key: Option<String>,
    /// The schedule that fired it, if one did.
    pub schedule: Option<String>,
    /// The schedule tick it was fired for (the trigger time of a manual trigger).
    pub fire_at: Option<DateTime<Utc>>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<MissionRecord> for MissionView {
    fn from(m: MissionRecord) -> Self {
        Self {
            id: m.id,
            workflow: m.workflow,
            status: m.status,
            input: redacted(m.input),
            output: m.output.map(redacted),
            error: m.error.map(redacted),
            idempotency_key: m.idempotency_key,
            concurrency_key: m.concurrency_key,
            schedule: m.schedule,
            fire_at: m.fire_at,
            cancel_requested: m.cancel_requested,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A mission with its steps, as shown by itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MissionDetail {
    /// The mission's own fields.
    #[serde(flatten)]
    pub mission: MissionView,
    /// Its steps, approvals and timers in journal order.
    pub steps: Vec<StepView>,
}

impl MissionDetail {
    /// Combine a mission with its journal. Compensation entries are left out: they are how an
    /// undo is executed, and their effect already shows as the undone step's `compensated`.
    pub fn new(mission: MissionRecord, journal: Vec<StepRecord>) -> Self {
        Self {
            mission: mission.into(),
            steps: journal
                .into_iter()
                .filter(|s| s.kind != StepKind::Compensation)
                .map(StepView::from)
                .collect(),
        }
    }
}

/// One step of a mission.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    /// Its name, unique within the mission.
    pub name: String,
    /// Task, approval or sleep.
    #[schema(schema_with = crate::openapi::step_kind)]
    pub kind: StepKind,
    /// Where it is.
    #[schema(schema_with = crate::openapi::step_status)]
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempts: i32,
    /// The input it was called with.
    pub input: Option<Value>,
    /// Its output (an approval's decision).
    pub output: Option<Value>,
    /// Its last error.
    pub error: Option<Value>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it settled.
    pub finished_at: Option<DateTime<Utc>>,
    /// When a retry, a timer or an approval timeout is due.
    pub wake_at: Option<DateTime<Utc>>,
}

impl From<StepRecord> for StepView {
    fn from(s: StepRecord) -> Self {
        Self {
            name: s.name,
            kind: s.kind,
            status: s.status,
            attempts: s.attempts,
            input: s.input.map(redacted),
            output: s.output.map(redacted),
            error: s.error.map(redacted),
            started_at: s.started_at,
            finished_at: s.finished_at,
            wake_at: s.wake_at,
        }
    }
}

/// A page of the mission list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MissionPage {
    /// Newest first.
    pub missions: Vec<MissionView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// An approval step waiting for a decision, as the inbox lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalView {
    /// The mission it belongs to.
    #[schema(value_type = uuid::Uuid)]
    pub mission_id: MissionId,
    /// That mission's workflow.
    pub workflow: String,
    /// The approval step's name (what to decide at `/missions/{id}/approvals/{step}`).
    pub step: String,
    /// What the approver is asked: its first 500 characters (the whole message is on the
    /// mission's approval step).
    pub message: Option<String>,
    /// Whether `message` was cut short.
    pub message_truncated: bool,
    /// When the decision was requested.
    pub requested_at: DateTime<Utc>,
    /// When no decision counts as a rejection; `null` for no timeout.
    pub deadline: Option<DateTime<Utc>>,
    /// The mission (without its steps).
    pub mission: MissionView,
}

impl From<WaitingApproval> for ApprovalView {
    fn from(a: WaitingApproval) -> Self {
        Self {
            mission_id: a.mission.id,
            workflow: a.mission.workflow.clone(),
            step: a.step,
            message: a.message.map(|m| redact::url(&m).into_owned()),
            message_truncated: a.message_truncated,
            requested_at: a.requested_at,
            deadline: a.deadline,
            mission: a.mission.into(),
        }
    }
}

/// The approvals inbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovalInbox {
    /// Oldest request first.
    pub approvals: Vec<ApprovalView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A registered workflow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowView {
    /// The name missions are submitted under.
    pub name: String,
    /// A JSON Schema of its input.
    pub input_schema: Value,
    /// Only the engine starts it (a schedule, a webhook, the healer); `POST /api/v1/missions`
    /// refuses it.
    pub internal: bool,
}

/// The registered workflows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Sorted by name.
    pub workflows: Vec<WorkflowView>,
}

/// A server-side secret, without its value (no route returns a value).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretView {
    /// Its name, as plans reference it: `{{secrets.NAME}}`.
    pub name: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When its value was last set.
    pub updated_at: DateTime<Utc>,
}

impl From<SecretInfo> for SecretView {
    fn from(s: SecretInfo) -> Self {
        Self {
            name: s.name,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The server-side secrets, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretList {
    /// Sorted by name.
    pub secrets: Vec<SecretView>,
}

/// The registered agents, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentList {
    /// Sorted by name.
    pub agents: Vec<hypercode_agents::AgentInfo>,
}

/// A schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Its unique name.
    pub name: String,
    /// Its cron expression, as written.
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// The workflow each tick starts.
    pub workflow: String,
    /// That workflow's input.
    pub input: Value,
    /// What a tick does while an earlier mission of the schedule is live.
    #[schema(schema_with = crate::schedules::overlap_schema)]
    pub overlap: Overlap,
    /// What happens to ticks missed while no server ran.
    #[schema(schema_with = crate::schedules::catchup_schema)]
    pub catchup: Catchup,
    /// Whether it fires (`false`: paused).
    pub enabled: bool,
    /// The next tick; null while paused or when the expression never fires again.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The latest tick that started a mission.
    pub last_fire_at: Option<DateTime<Utc>>,
    /// Ticks not fired because an earlier mission was still live (`overlap: skip`).
    pub skipped: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<ScheduleRecord> for ScheduleView {
    fn from(s: ScheduleRecord) -> Self {
        let spec = s.spec;
        Self {
            name: spec.name.into(),
            cron: spec.cron.into(),
            timezone: spec.timezone.into(),
            workflow: spec.workflow,
            input: redacted(spec.input),
            overlap: spec.overlap,
            catchup: spec.catchup,
            enabled: spec.enabled,
            next_fire_at: s.next_fire_at,
            last_fire_at: s.last_fire_at,
            skipped: s.skipped,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A mission a schedule started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduledMissionView {
    /// The mission's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: MissionId,
    /// Where it is.
    #[schema(schema_with = crate::openapi::mission_status)]
    pub status: MissionStatus,
    /// The tick it was fired for (the trigger time of a manual trigger).
    pub fire_at: DateTime<Utc>,
}

impl From<ScheduledMission> for ScheduledMissionView {
    fn from(m: ScheduledMission) -> Self {
        Self {
            id: m.id,
            status: m.status,
            fire_at: m.fire_at,
        }
    }
}

/// A schedule with its newest missions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleDetail {
    /// The schedule's own fields.
    #[serde(flatten)]
    pub schedule: ScheduleView,
    /// Its newest missions, newest tick first.
    pub recent_missions: Vec<ScheduledMissionView>,
}

/// Every schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Sorted by name.
    pub schedules: Vec<ScheduleView>,
}

/// The mission a manual trigger started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Triggered {
    /// The mission's id.
    #[schema(value_type = uuid::Uuid)]
    pub id: MissionId,
}

/// A worker process, as its heartbeats report it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerView {
    /// The name it claims leases under; the `worker` of the `mission_started` and
    /// `mission_resumed` events of the missions it ran.
    pub id: String,
    /// The host (in a container: the container's host name).
    pub host: String,
    /// `alive`, `lost` (no heartbeat for five beats: killed, paused or cut off) or `stopped`
    /// (shut down cleanly).
    pub state: crate::workers::WorkerState,
    /// Missions it runs at once at most.
    pub concurrency: i32,
    /// Missions it holds the lease of now.
    pub busy: usize,
    /// Wake-ups it has handled since it started.
    pub handled: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    pub last_heartbeat: DateTime<Utc>,
}

/// The worker processes heard from lately.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerList {
    /// Oldest start first.
    pub workers: Vec<WorkerView>,
}

/// One history event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Position in the mission's history, from 1.
    pub seq: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What happened (`step_succeeded`, ...).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: EventType,
    /// The step it concerns.
    pub step: Option<String>,
    /// The attempt it concerns.
    pub attempt: Option<i32>,
    /// Details.
    pub data: Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            kind: e.kind,
            step: e.step,
            attempt: e.attempt,
            data: redacted(e.data),
        }
    }
}

/// `value` with its secrets hidden.
fn redacted(mut value: Value) -> Value {
    redact::in_place(&mut value);
    value
}

/// A page of a mission's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPage {
    /// In `seq` order.
    pub events: Vec<EventView>,
    /// The last `seq` shown, to pass as `after` for the next page (or to poll for new events);
    /// `null` when the page is empty, in which case the same `after` should be used again.
    pub next_after: Option<i64>,
}

/// One row of an account's token ledger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntryView {
    /// Its position in the ledger (increasing).
    pub id: i64,
    /// Positive: tokens credited; negative: tokens debited.
    pub amount: i64,
    /// `award`, `spend`, `purchase`, `refund`, `reversal` or `shop`.
    #[schema(value_type = String)]
    pub kind: EntryKind,
    /// Why, in words.
    pub reason: String,
    /// What it refers to: a Checkout Session for a purchase or its reversal, the mission of a
    /// shop purchase or its refund.
    pub reference: Option<String>,
    /// The key that makes writing it idempotent.
    pub idempotency_key: String,
    /// The balance right after it.
    pub balance_after: i64,
    /// When it was written.
    pub at: DateTime<Utc>,
}

impl From<Entry> for LedgerEntryView {
    fn from(e: Entry) -> Self {
        Self {
            id: e.id,
            amount: e.amount.get(),
            kind: e.kind,
            reason: e.reason,
            reference: e.reference,
            idempotency_key: e.idempotency_key,
            balance_after: e.balance_after.get(),
            at: e.at,
        }
    }
}

/// A subscription, as Stripe's webhooks left it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Stripe's id (`sub_...`).
    pub id: String,
    /// The catalogue plan, once its checkout completed.
    pub plan: Option<String>,
    /// The course it enrols in.
    pub course: Option<String>,
    /// In Stripe's words: `active`, `past_due`, `canceled`, ...
    pub status: String,
    /// When it last changed here.
    pub updated_at: DateTime<Utc>,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id,
            plan: s.plan,
            course: s.course,
            status: s.status,
            updated_at: s.updated_at,
        }
    }
}

/// Something an account holds: a course (while its subscription is `active`, `trialing` or
/// `past_due`) or a shop item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntitlementView {
    /// `course` or `shop`.
    pub kind: String,
    /// The course, or the shop item's id.
    pub item: String,
    /// The subscription, or the shop purchase's idempotency key.
    pub source: String,
    /// When it was granted.
    pub granted_at: DateTime<Utc>,
}

impl From<Entitlement> for EntitlementView {
    fn from(e: Entitlement) -> Self {
        Self {
            kind: e.kind,
            item: e.item,
            source: e.source,
            granted_at: e.granted_at,
        }
    }
}

/// An account: its balance, a page of its ledger, its subscriptions and what it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// The account's id.
    pub account: String,
    /// Tokens held; never negative, always the sum of the ledger.
    pub balance: i64,
    /// Tokens a refund took back after they had been spent.
    pub arrears: i64,
    /// Newest first.
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `cursor` for the next page of entries; `null` on the last one.
    pub next_cursor: Option<String>,
    /// Newest change first.
    pub subscriptions: Vec<SubscriptionView>,
    /// Newest first.
    pub entitlements: Vec<EntitlementView>,
}

/// What `POST /api/v1/accounts/{account}/tokens` wrote (or, for a repeated idempotency key,
/// had written the first time).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokensPosted {
    /// The account.
    pub account: String,
    /// The balance right after the entry.
    pub balance: i64,
    /// The entry.
    pub entry: LedgerEntryView,
}

/// A created Checkout Session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckoutSessionView {
    /// Stripe's id (`cs_...`).
    pub id: String,
    /// Where to send the buyer.
    pub url: Option<String>,
}

/// What the webhook answers to a verified event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookReceived {
    /// The event's id.
    pub id: String,
    /// Whether this delivery stored it (false: it had been delivered before).
    pub new: bool,
    /// The `stripe_event` mission that applies it.
    #[schema(value_type = uuid::Uuid)]
    pub mission: MissionId,
}

/// An item of the shop.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShopItemView {
    /// What purchases name it by.
    pub id: String,
    /// What the buyer sees.
    pub name: String,
    /// Its price in tokens.
    pub cost: i64,
}

/// The shop.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShopList {
    /// In catalogue order.
    pub items: Vec<ShopItemView>,
}

/// A started (or, for a repeated idempotency key, the earlier) purchase.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurchaseStarted {
    /// The `shop_purchase` mission.
    #[schema(value_type = uuid::Uuid)]
    pub id: MissionId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(position: i32, name: &str, kind: StepKind, status: StepStatus) -> StepRecord {
        StepRecord {
            position,
            name: name.to_owned(),
            kind,
            status,
            attempts: 1,
            input: None,
            output: None,
            error: None,
            wake_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// A failed mission of the plan workflow with this input and outcome.
    fn failed_mission(input: Value, output: Option<Value>, error: Value) -> MissionRecord {
        let now = Utc::now();
        MissionRecord {
            id: MissionId::new(),
            workflow: "plan".into(),
            status: MissionStatus::Failed,
            input,
            output,
            error: Some(error),
            idempotency_key: None,
            concurrency_key: None,
            schedule: None,
            fire_at: None,
            cancel_requested: false,
            wake_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn detail_hides_compensations_and_has_the_contract_fields() {
        let mission = failed_mission(json!({}), None, json!({"message": "boom"}));
        let journal = vec![
            step(0, "a", StepKind::Task, StepStatus::Compensated),
            step(1, "b", StepKind::Task, StepStatus::Failed),
            step(2, "undo:a", StepKind::Compensation, StepStatus::Succeeded),
        ];
        let json = serde_json::to_value(MissionDetail::new(mission, journal)).unwrap_or_default();
        let mut keys: Vec<_> = json
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cancel_requested",
                "concurrency_key",
                "created_at",
                "error",
                "fire_at",
                "id",
                "idempotency_key",
                "input",
                "output",
                "schedule",
                "status",
                "steps",
                "updated_at",
                "workflow"
            ]
        );
        assert_eq!(json["status"], "failed");
        let steps = json["steps"].as_array().cloned().unwrap_or_default();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0]["status"], "compensated");
        assert_eq!(steps[0]["kind"], "task");
        assert_eq!(steps[1]["name"], "b");
    }

    #[test]
    fn an_agent_has_the_contract_fields_and_no_call_secret() {
        let view = hypercode_agents::AgentInfo {
            name: "ops".into(),
            url: "http://agent:9000".into(),
            capabilities: vec!["devops".into()],
            live: true,
            last_heartbeat: Some(Utc::now()),
            in_flight: 2,
        };
        let json = serde_json::to_value(AgentList { agents: vec![view] }).unwrap_or_default();
        let mut keys: Vec<_> = json["agents"][0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            [
                "capabilities",
                "in_flight",
                "last_heartbeat",
                "live",
                "name",
                "url"
            ]
        );
        assert_eq!(json["agents"][0]["in_flight"], 2);
        assert!(json["agents"][0]["last_heartbeat"].is_string());
    }

    #[test]
    fn views_hide_secrets_in_inputs_outputs_errors_and_events() {
        let now = Utc::now();
        let request =
            json!({ "url": "http://u:p@h/", "headers": { "X-API-Key": "k", "X-Custom": "c" } });
        let mut mission = failed_mission(
            json!({ "steps": [{ "http": request }] }),
            Some(json!({ "access_token": "t" })),
            json!({ "message": "GET http://u:p@h/ answered 400" }),
        );
        mission.idempotency_key = Some("key-1".into());
        let mut task = step(0, "a", StepKind::Task, StepStatus::Failed);
        task.input = Some(request);
        let detail =
            serde_json::to_value(MissionDetail::new(mission, vec![task])).unwrap_or_default();
        let hidden = json!({ "url": "http://[redacted]@h/", "headers": { "X-API-Key": "[redacted]", "X-Custom": "c" } });
        assert_eq!(detail["input"]["steps"][0]["http"], hidden);
        assert_eq!(detail["steps"][0]["input"], hidden);
        assert_eq!(detail["output"]["access_token"], "[redacted]");
        assert_eq!(
            detail["error"]["message"],
            "GET http://[redacted]@h/ answered 400"
        );
        assert_eq!(detail["idempotency_key"], "key-1");
        let event = EventView::from(Event {
            seq: 1,
            at: now,
            kind: EventType::StepFailed,
            step: Some("a".into()),
            attempt: Some(1),
            data: json!({ "error": { "details": { "body": { "headers": { "Cookie": "c=1" } } } } }),
        });
        assert_eq!(
            event.data["error"]["details"]["body"]["headers"]["Cookie"],
            "[redacted]"
        );
    }

    #[test]
    fn ledger_entries_have_the_contract_fields() {
        let entry = Entry {
            id: 7,
            account: "ada".into(),
            amount: hypercode_payments::Tokens(-30),
            kind: EntryKind::Spend,
            reason: "r".into(),
            reference: None,
            idempotency_key: "k".into(),
            balance_after: hypercode_payments::Tokens(70),
            at: Utc::now(),
        };
        let json = serde_json::to_value(LedgerEntryView::from(entry)).unwrap_or_default();
        let mut keys: Vec<_> = json
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            [
                "amount",
                "at",
                "balance_after",
                "id",
                "idempotency_key",
                "kind",
                "reason",
                "reference"
            ]
        );
        assert_eq!(json["kind"], "spend");
        assert_eq!(json["amount"], -30);
    }
}
