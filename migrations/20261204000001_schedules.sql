-- Durable cron schedules. `serve` replicas fire due ticks: each locks the due rows with
-- `for update skip locked`, starts the ticks' missions and moves `next_fire_at` on, in one
-- transaction. A mission's idempotency key names its tick, so a tick fired twice is one mission.
create type schedule_overlap as enum ('skip', 'allow', 'cancel_previous');
create type schedule_catchup as enum ('once', 'skip', 'all');

create table schedules (
    name         text primary key
                 constraint schedules_name_format check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    cron         text not null,
    timezone     text not null default 'UTC',
    workflow     text not null,
    input        jsonb not null default '{}',
    overlap      schedule_overlap not null default 'skip',
    catchup      schedule_catchup not null default 'once',
    enabled      boolean not null default true,
    -- The tick the schedule waits for; null while paused or when the expression never fires again.
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    -- Ticks not fired because an earlier mission of the schedule was still live (`overlap: skip`).
    skipped      bigint not null default 0,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

-- What the tickers poll: the enabled schedules by their next tick.
create index schedules_due on schedules (next_fire_at) where enabled and next_fire_at is not null;

-- A mission fired by a schedule names it and the tick it is for (the trigger time for a manual one).
alter table missions add column schedule text, add column fire_at timestamptz;
create index missions_by_schedule on missions (schedule, fire_at desc, id)
    where schedule is not null;
