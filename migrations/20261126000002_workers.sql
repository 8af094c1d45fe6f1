-- Worker heartbeats, for the "Workers and queues" page: which worker processes are alive, how
-- many missions each may run at once and how many wake-ups it has handled. What a worker is
-- running right now is not kept here: it is `missions.lease_owner` of the running missions (the
-- same string as `workers.id`), so there is nothing to keep in step.

create table workers (
    -- The engine's worker id, the name it claims leases under (host, pid, random suffix).
    id           text primary key,
    -- The queue it takes wake-ups from (HYPERCODE_QUEUE).
    queue        text not null,
    host         text not null,
    pid          integer not null,
    concurrency  integer not null,
    started_at   timestamptz not null,
    -- Rewritten every few seconds; a worker that stops beating is presumed dead.
    heartbeat_at timestamptz not null default now(),
    -- Set on a graceful shutdown (a killed worker only stops beating).
    stopped_at   timestamptz,
    -- Wake-ups handled since it started.
    handled      bigint not null default 0
);
-- No index beyond the key: the table holds only the workers seen in the last day (each worker
-- deletes older rows), a few dozen rows that every read scans whole.

-- Throughput counts events by time. Events are append-only and `at` is their insert time, so it
-- follows the table's physical order: a BRIN index (the min and max `at` of each range of 128
-- pages) lets "the last few minutes" read only the newest blocks, at almost no cost on insert
-- and a few pages of size, where a B-tree would add a write to every event. Ranges filled after
-- the build are only summarized by a vacuum, and an unsummarized range is always read, which
-- would mean the whole history between vacuums; `autosummarize` has autovacuum summarize each
-- range as soon as the next one starts, so only the newest range is always read. The index is
-- built here in one sequential scan of the table.
create index events_by_at on events using brin (at) with (autosummarize = on);
