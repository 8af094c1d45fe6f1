-- The healer's incidents: one per run of failures of one container. A failure of a container
-- within the heal window of its previous heal continues the open incident; escalated incidents
-- stop the healer from touching the container until an operator resolves them.
create type incident_status as enum ('open', 'healed', 'escalated', 'resolved');
create type incident_cause as enum ('exited', 'oom', 'unhealthy');

create table incidents (
    id                 uuid primary key,
    container_id       text not null,
    container_name     text not null,
    cause              incident_cause not null,
    status             incident_status not null default 'open',
    -- Heal missions started for it.
    attempts           integer not null default 0 check (attempts >= 0),
    opened_at          timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    -- When the last failure was detected: a failure after the window has passed opens a new
    -- incident.
    last_failure_at    timestamptz not null default now(),
    resolved_at        timestamptz,
    resolved_by        text,
    resolution_comment text
);

-- The list is newest first, filtered by status and container.
create index incidents_opened on incidents (opened_at desc, id desc);
create index incidents_container on incidents (container_id, opened_at desc);
-- At most one incident per container is being healed or holds it escalated.
create unique index incidents_one_active on incidents (container_id) where status in ('open', 'escalated');

-- Each failure the healer acted on, keyed like its heal mission's idempotency key
-- (`heal:<container id>:<FinishedAt>`), so a failure seen twice (two replicas, the event and
-- the sweep) is counted once.
create table incident_failures (
    failure_key  text primary key,
    incident_id  uuid not null references incidents (id),
    attempt      integer not null check (attempt > 0),
    -- The crash-loop backoff the heal mission waits before restarting.
    delay_ms     bigint not null check (delay_ms >= 0),
    mission_id   uuid references missions (id),
    detected_at  timestamptz not null default now()
);

create index incident_failures_incident on incident_failures (incident_id, attempt);
