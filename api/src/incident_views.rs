//! The response bodies of the healer's routes (`/api/v1/incidents`, `/api/v1/logs`): lists of
//! the healer's own [`Incident`] and [`LogEntry`], which are the public JSON contract.

use hypercode_healer::{Incident, LogEntry};
use serde::Serialize;
use utoipa::ToSchema;

/// Incidents, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<Incident>,
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
    use chrono::Utc;
    use hypercode_engine::MissionId;
    use hypercode_healer::{Cause, IncidentId, IncidentStatus, LogLevel};

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
        let incident = Incident {
            id: IncidentId(uuid::Uuid::now_v7()),
            container_id: "abc".into(),
            container_name: "web".into(),
            cause: Cause::Oom,
            status: IncidentStatus::Escalated,
            attempts: 5,
            opened_at: now,
            updated_at: now,
            missions: vec![MissionId::new()],
        };
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
