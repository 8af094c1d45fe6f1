//! The response bodies of the healer's routes (`/api/v1/incidents`, `/api/v1/logs`), spelled
//! out field by field like the other views: the public JSON contract, not the stored rows.

use chrono::{DateTime, Utc};
use hypercode_engine::MissionId;
use hypercode_healer::{Cause, Incident, IncidentId, IncidentStatus, LogEntry};
use serde::Serialize;
use utoipa::ToSchema;

/// One incident: a run of failures of one container and the heal missions started for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentView {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: IncidentId,
    /// The container's full id.
    pub container_id: String,
    /// The container's name, without the leading slash.
    pub container_name: String,
    /// What went wrong last: `exited` (a non-zero exit), `oom` or `unhealthy`.
    pub cause: Cause,
    /// `open` while healing, `healed`, `escalated` (no more restarts until resolved) or
    /// `resolved`.
    pub status: IncidentStatus,
    /// Heal missions started for it.
    pub attempts: u32,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its heal missions' ids, oldest first.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub missions: Vec<MissionId>,
}

impl From<Incident> for IncidentView {
    fn from(incident: Incident) -> Self {
        Self {
            id: incident.id,
            container_id: incident.container_id,
            container_name: incident.container_name,
            cause: incident.cause,
            status: incident.status,
            attempts: incident.attempts,
            opened_at: incident.opened_at,
            updated_at: incident.updated_at,
            missions: incident.missions,
        }
    }
}

/// Incidents, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentView>,
}

/// Entries of the log (`hypercode:logs`), newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogList {
    /// Newest first.
    pub entries: Vec<LogEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercode_healer::LogLevel;

    fn keys(value: serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    #[test]
    fn incidents_and_log_entries_have_the_contract_fields() {
        let now = Utc::now();
        let incident = IncidentView::from(Incident {
            id: IncidentId(uuid::Uuid::now_v7()),
            container_id: "abc".into(),
            container_name: "web".into(),
            cause: Cause::Oom,
            status: IncidentStatus::Escalated,
            attempts: 5,
            opened_at: now,
            updated_at: now,
            missions: vec![MissionId::new()],
        });
        let json = serde_json::to_value(incident).unwrap_or_default();
        assert_eq!(
            keys(json.clone()),
            [
                "attempts",
                "cause",
                "container_id",
                "container_name",
                "id",
                "missions",
                "opened_at",
                "status",
                "updated_at"
            ]
        );
        assert_eq!(json["cause"], "oom");
        assert_eq!(json["status"], "escalated");
        let entry = LogEntry::healer(LogLevel::Warn, "m", "web", None);
        assert_eq!(
            keys(serde_json::to_value(entry).unwrap_or_default()),
            ["at", "container", "incident", "level", "message", "source"]
        );
    }
}
