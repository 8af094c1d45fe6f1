-- The unique index on missions.idempotency_key held an entry for every mission, keyless ones
-- included (a B-tree indexes NULLs), so each insert and each non-HOT update of a mission row (its
-- claim, its end) wrote one to the WAL for nothing. Only keyed missions are entered now; the
-- submission's `on conflict` names the same predicate, and lookups by key (`= $1`) imply it.
alter table missions drop constraint missions_idempotency_key_key;
create unique index missions_idempotency_key on missions (idempotency_key)
    where idempotency_key is not null;
