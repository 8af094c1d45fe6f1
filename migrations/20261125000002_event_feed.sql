-- The global event feed (GET /api/v1/events): every history event gets a global position, and
-- every commit that appends events is announced on a notification channel. How readers use both
-- without ever skipping an event that commits late is explained in engine/src/postgres/feed.rs.

-- The position. Existing rows are numbered by the identity default as the column is added (the
-- table is rewritten under an exclusive lock, once). Positions are handed out at insert time and
-- transactions commit in any order, so a position says nothing about visibility by itself; see
-- `events_feed_mark` below. `cache 1` is required: with a larger cache a session could use an id
-- taken from its cache after the feed has read the sequence, and that id would look final.
alter table events add column id bigint generated always as identity (cache 1);
create unique index events_by_id on events (id);

-- Before any id of a statement is drawn, its transaction must own an xid: the feed's horizon
-- relies on "whoever holds an id drew it after getting its xid". Statement level, so a batch of
-- events costs one call. (Every writer in this code base has already updated a mission row by
-- then; this makes the rule hold for any writer.)
create function events_feed_take_xid() returns trigger language plpgsql as $$
begin
    perform pg_current_xact_id();
    return null;
end;
$$;

create trigger events_feed_take_xid
    before insert on events
    for each statement execute function events_feed_take_xid();

-- A notification on commit (never for a rollback) of statements that append events, so every
-- process following the feed learns of it at once. Followers only learn "something was
-- appended"; they read the rows themselves. At most one per session every 50 ms: a notifying
-- commit takes a cluster-wide lock that it holds through its WAL flush, so notifying every
-- commit would serialize the busiest writers (measured: single-event commits at 8 clients ran
-- 2-4x slower). Followers poll at the same period while they have clients, so a commit that
-- does not notify is seen within it; on a quiet system every first commit notifies.
create function events_feed_notify() returns trigger language plpgsql as $$
declare
    last_ms text := current_setting('hypercode.feed_notified_at', true);
    now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
begin
    if coalesce(last_ms, '') = '' or abs(now_ms - last_ms::bigint) >= 50 then
        -- Session level: it outlives the transaction (and is undone with it on rollback).
        perform set_config('hypercode.feed_notified_at', now_ms::text, false);
        perform pg_notify('hypercode_events', '');
    end if;
    return null;
end;
$$;

create trigger events_feed_notify
    after insert on events
    for each statement execute function events_feed_notify();

-- One step of the feed's horizon protocol, in a fixed order (each statement of a plpgsql
-- function sees a fresh snapshot under read committed):
--   oldest_xid: the oldest transaction still running (pg_snapshot_xmin of a fresh snapshot);
--   last_id:    the last id handed out so far, committed or not;
--   marker:     when last_id is above `known`, an xid taken after reading it (else null).
-- Every transaction holding an id <= last_id drew it after getting its xid (see the trigger
-- above), hence before `marker` was assigned: its xid is below `marker`. So once a later call
-- reports oldest_xid > marker, every event with id <= last_id is committed or rolled back for
-- good, and a reader may deliver all of them in id order without leaving a hole behind.
-- The marker's transaction commits without waiting for its WAL flush: it writes nothing.
create function events_feed_mark(known bigint, out oldest_xid bigint, out last_id bigint,
                                 out marker bigint)
language plpgsql as $$
begin
    oldest_xid := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
    last_id := coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0);
    if last_id > known then
        perform set_config('synchronous_commit', 'off', true);
        marker := pg_current_xact_id()::text::bigint;
    end if;
end;
$$;
