//! The incident store: one incident per run of failures of one container, in PostgreSQL.
//!
//! [`IncidentStore::record_failure`] is the healer's one decision, made in one transaction
//! under a per-container advisory lock, so replicas and the two detection paths agree: a
//! failure already recorded (keyed like its heal mission) changes nothing; otherwise it opens
//! an incident, continues the container's current one (back to `open`, one more attempt), or
//! escalates it once the crash-loop policy is exhausted. An escalated incident holds the
//! container until an operator resolves it.

use crate::policy::HealPolicy;
use chrono::{DateTime, Utc};
use hypercode_engine::{MissionId, StoreError, StoreResult};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// The identity of one incident.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct IncidentId(pub Uuid);

impl std::fmt::Display for IncidentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for IncidentId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where an incident stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "incident_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// A heal is under way.
    Open,
    /// The last heal saw the container running (and healthy, with a healthcheck).
    Healed,
    /// The container kept failing; the healer leaves it alone until an operator resolves this.
    Escalated,
    /// An operator closed it.
    Resolved,
}

impl IncidentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 4] = [Self::Open, Self::Healed, Self::Escalated, Self::Resolved];

    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Healed => "healed",
            Self::Escalated => "escalated",
            Self::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "must be one of {}; got `{s}`",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// What went wrong with the container.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "incident_cause", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Its process exited with a non-zero code.
    Exited,
    /// The kernel's OOM killer ended it.
    Oom,
    /// Its healthcheck reports it unhealthy.
    Unhealthy,
}

impl Cause {
    /// The cause as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Oom => "oom",
            Self::Unhealthy => "unhealthy",
        }
    }
}

// The API answers with this record as it is (`IncidentView` in the OpenAPI document), so its
// doc comments are the document's descriptions.
/// One incident: a run of failures of one container and the heal missions started for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = IncidentView)]
pub struct Incident {
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

/// One failure of one container, as detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The full container id.
    pub container_id: String,
    /// Its name, without the leading slash.
    pub container_name: String,
    /// What went wrong.
    pub cause: Cause,
    /// The container's `FinishedAt` as Docker reports it: one value per failure.
    pub finished_at: String,
}

impl Failure {
    /// The key that names this failure, and the idempotency key of its heal mission.
    pub fn key(&self) -> String {
        format!("heal:{}:{}", self.container_id, self.finished_at)
    }
}

/// What the healer does about a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start (or, when it was already recorded, make sure of) heal number `attempt` of the
    /// incident, waiting `delay` before restarting.
    Heal {
        /// The incident, after the failure was recorded.
        incident: Incident,
        /// Which heal of the incident this is (1-based).
        attempt: u32,
        /// The crash-loop backoff before the restart.
        delay: Duration,
        /// Whether this call recorded the failure (false: another replica or path did).
        first: bool,
    },
    /// The incident is escalated: leave the container alone.
    Escalated {
        /// The escalated incident.
        incident: Incident,
        /// Whether this failure escalated it (false: it already was).
        now: bool,
    },
}

/// Which incidents to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    /// Only those in this status.
    pub status: Option<IncidentStatus>,
    /// Only those of the container with this name, id or id prefix.
    pub container: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// Incidents in PostgreSQL.
#[derive(Debug, Clone)]
pub struct IncidentStore {
    pool: PgPool,
}

/// A row of `incidents` with its missions.
struct Row {
    id: IncidentId,
    container_id: String,
    container_name: String,
    cause: Cause,
    status: IncidentStatus,
    attempts: i32,
    opened_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    missions: Vec<Uuid>,
}

impl From<Row> for Incident {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            container_id: row.container_id,
            container_name: row.container_name,
            cause: row.cause,
            status: row.status,
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
            opened_at: row.opened_at,
            updated_at: row.updated_at,
            missions: row.missions.into_iter().map(MissionId).collect(),
        }
    }
}

impl IncidentStore {
    /// The store on `pool` (with the migrations applied).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Record a failure and decide what to do about it (see the module's documentation).
    pub async fn record_failure(
        &self,
        failure: &Failure,
        policy: &HealPolicy,
    ) -> StoreResult<Verdict> {
        let key = failure.key();
        let mut tx = self.pool.begin().await?;
        // Replicas and the two detection paths decide about one container one at a time.
        sqlx::query_scalar!(
            r#"select pg_advisory_xact_lock(hashtextextended($1, 0)) is null as "locked!""#,
            failure.container_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let seen = sqlx::query!(
            r#"select incident_id as "incident_id: IncidentId", attempt, delay_ms
               from incident_failures where failure_key = $1"#,
            key
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(seen) = seen {
            let incident = fetch(&mut *tx, seen.incident_id).await?;
            tx.commit().await?;
            return Ok(match incident.status {
                IncidentStatus::Escalated => Verdict::Escalated {
                    incident,
                    now: false,
                },
                _ => Verdict::Heal {
                    incident,
                    attempt: u32::try_from(seen.attempt).unwrap_or_default(),
                    delay: Duration::from_millis(u64::try_from(seen.delay_ms).unwrap_or_default()),
                    first: false,
                },
            });
        }
        let window = policy.window.as_secs_f64();
        // The container's incident that this failure continues: one being healed or escalated,
        // or one healed within the window.
        let current = sqlx::query!(
            r#"select id as "id: IncidentId", status as "status: IncidentStatus", attempts
               from incidents
               where container_id = $1
                 and (status in ('open', 'escalated')
                      or (status = 'healed'
                          and last_failure_at > now() - make_interval(secs => $2)))
               order by opened_at desc
               limit 1
               for update"#,
            failure.container_id,
            window
        )
        .fetch_optional(&mut *tx)
        .await?;
        let (id, attempt) = match current {
            Some(current) if current.status == IncidentStatus::Escalated => {
                let incident = fetch(&mut *tx, current.id).await?;
                tx.commit().await?;
                return Ok(Verdict::Escalated {
                    incident,
                    now: false,
                });
            }
            Some(current) if policy.exhausted(u32::try_from(current.attempts).unwrap_or(0)) => {
                sqlx::query!(
                    "update incidents set status = 'escalated', cause = $2, updated_at = now(),
                            last_failure_at = now()
                     where id = $1",
                    current.id as IncidentId,
                    failure.cause as Cause
                )
                .execute(&mut *tx)
                .await?;
                let incident = fetch(&mut *tx, current.id).await?;
                tx.commit().await?;
                return Ok(Verdict::Escalated {
                    incident,
                    now: true,
                });
            }
            Some(current) => {
                let attempts = sqlx::query_scalar!(
                    "update incidents set status = 'open', cause = $2, attempts = attempts + 1,
                            updated_at = now(), last_failure_at = now(), container_name = $3
                     where id = $1
                     returning attempts",
                    current.id as IncidentId,
                    failure.cause as Cause,
                    failure.container_name
                )
                .fetch_one(&mut *tx)
                .await?;
                (current.id, u32::try_from(attempts).unwrap_or_default())
            }
            None => {
                let id = IncidentId(Uuid::now_v7());
                sqlx::query!(
                    "insert into incidents (id, container_id, container_name, cause, attempts)
                     values ($1, $2, $3, $4, 1)",
                    id as IncidentId,
                    failure.container_id,
                    failure.container_name,
                    failure.cause as Cause
                )
                .execute(&mut *tx)
                .await?;
                (id, 1)
            }
        };
        let delay = HealPolicy::backoff(attempt);
        sqlx::query!(
            "insert into incident_failures (failure_key, incident_id, attempt, delay_ms)
             values ($1, $2, $3, $4)",
            key,
            id as IncidentId,
            i32::try_from(attempt).unwrap_or(i32::MAX),
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
        )
        .execute(&mut *tx)
        .await?;
        let incident = fetch(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(Verdict::Heal {
            incident,
            attempt,
            delay,
            first: true,
        })
    }

    /// Note the heal mission started for a failure (idempotent).
    pub async fn attach_mission(&self, failure_key: &str, mission: MissionId) -> StoreResult<()> {
        sqlx::query!(
            "update incident_failures set mission_id = $2
             where failure_key = $1 and mission_id is null",
            failure_key,
            mission as MissionId
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Mark an incident healed if it is being healed; whether it was (an escalated or resolved
    /// one stays as it is).
    pub async fn mark_healed(&self, id: IncidentId) -> StoreResult<bool> {
        let healed = sqlx::query!(
            "update incidents set status = 'healed', updated_at = now()
             where id = $1 and status = 'open'",
            id as IncidentId
        )
        .execute(&self.pool)
        .await?;
        Ok(healed.rows_affected() == 1)
    }

    /// Resolve an incident: `NotFound` for an unknown one, `Conflict` for one already resolved.
    pub async fn resolve(
        &self,
        id: IncidentId,
        by: &str,
        comment: Option<&str>,
    ) -> StoreResult<Incident> {
        let mut tx = self.pool.begin().await?;
        let status = sqlx::query_scalar!(
            r#"select status as "status: IncidentStatus" from incidents where id = $1 for update"#,
            id as IncidentId
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))?;
        if status == IncidentStatus::Resolved {
            return Err(StoreError::Conflict(format!(
                "incident {id} is already resolved"
            )));
        }
        sqlx::query!(
            "update incidents set status = 'resolved', updated_at = now(), resolved_at = now(),
                    resolved_by = $2, resolution_comment = $3
             where id = $1",
            id as IncidentId,
            by,
            comment
        )
        .execute(&mut *tx)
        .await?;
        let incident = fetch(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(incident)
    }

    /// One incident.
    pub async fn get(&self, id: IncidentId) -> StoreResult<Option<Incident>> {
        let mut conn = self.pool.acquire().await?;
        match fetch(&mut *conn, id).await {
            Ok(incident) => Ok(Some(incident)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Incidents matching `filter`, newest first.
    pub async fn list(&self, filter: &IncidentFilter) -> StoreResult<Vec<Incident>> {
        select(&self.pool, filter, None).await
    }
}

/// One incident with its missions, on `executor`; `NotFound` if there is none.
async fn fetch<'c, E>(executor: E, id: IncidentId) -> StoreResult<Incident>
where
    E: sqlx::PgExecutor<'c>,
{
    let filter = IncidentFilter {
        limit: 1,
        ..IncidentFilter::default()
    };
    select(executor, &filter, Some(id))
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("incident {id}")))
}

/// The incidents matching `filter` (and `id`, if given), newest first, with their missions.
async fn select<'c, E>(
    executor: E,
    filter: &IncidentFilter,
    id: Option<IncidentId>,
) -> StoreResult<Vec<Incident>>
where
    E: sqlx::PgExecutor<'c>,
{
    let rows = sqlx::query_as!(
        Row,
        r#"select i.id as "id: IncidentId", i.container_id, i.container_name,
                  i.cause as "cause: Cause", i.status as "status: IncidentStatus",
                  i.attempts, i.opened_at, i.updated_at,
                  array(select f.mission_id from incident_failures f
                        where f.incident_id = i.id and f.mission_id is not null
                        order by f.attempt) as "missions!"
           from incidents i
           where ($1::incident_status is null or i.status = $1)
             and ($2::text is null or i.container_name = $2 or starts_with(i.container_id, $2))
             and ($4::uuid is null or i.id = $4)
           order by i.opened_at desc, i.id desc
           limit $3"#,
        filter.status as Option<IncidentStatus>,
        filter.container,
        i64::from(filter.limit),
        id as Option<IncidentId>
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(Incident::from).collect())
}
