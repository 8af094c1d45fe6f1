-- The durable core: missions, their step journal, their append-only history, and API keys.

create type mission_status as enum ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled');
create type step_status as enum ('pending', 'running', 'waiting', 'succeeded', 'failed', 'rejected', 'compensated', 'skipped');
create type step_kind as enum ('task', 'approval', 'sleep', 'compensation');
create type api_role as enum ('admin', 'operator', 'agent', 'viewer');

create table missions (
    id               uuid primary key,
    workflow         text not null,
    status           mission_status not null default 'pending',
    input            jsonb not null,
    output           jsonb,
    error            jsonb,
    idempotency_key  text unique,
    cancel_requested boolean not null default false,
    -- A waiting mission becomes runnable at wake_at (a timer, a retry backoff, an approval timeout).
    wake_at          timestamptz,
    -- The lease: only the holder of lease_token may write; every claim increments it (fencing).
    lease_owner      text,
    lease_token      bigint not null default 0,
    lease_expires_at timestamptz,
    -- When a wake-up was last handed to the queue; the reconciler re-sends lost ones.
    enqueued_at      timestamptz,
    last_seq         bigint not null default 0,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint missions_terminal_has_no_lease
        check (status not in ('succeeded', 'failed', 'cancelled') or lease_owner is null)
);

create index missions_by_created on missions (created_at desc, id desc);
create index missions_by_status on missions (status, created_at desc, id desc);
create index missions_by_workflow on missions (workflow, created_at desc, id desc);
-- Only live missions are scanned by the reconciler; the index stays small as history grows.
create index missions_live on missions (status, wake_at)
    where status in ('pending', 'running', 'waiting');

create table steps (
    mission_id  uuid not null references missions (id),
    position    integer not null,
    name        text not null,
    kind        step_kind not null,
    status      step_status not null,
    attempts    integer not null default 0,
    input       jsonb,
    output      jsonb,
    error       jsonb,
    wake_at     timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz not null default now(),
    primary key (mission_id, position),
    constraint steps_unique_name unique (mission_id, name)
);

create table events (
    mission_id uuid not null references missions (id),
    seq        bigint not null,
    at         timestamptz not null default now(),
    type       text not null,
    step       text,
    attempt    integer,
    data       jsonb not null default '{}',
    primary key (mission_id, seq)
);

create function events_are_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'events are append-only: % is not allowed', tg_op;
end;
$$;

create trigger events_append_only
    before update or delete on events
    for each row execute function events_are_append_only();

create table api_keys (
    id         uuid primary key,
    name       text not null,
    role       api_role not null,
    key_hash   bytea not null unique,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
