-- How many times each mission was retried by hand (`POST /missions/{id}/retry`). Workers read it
-- with their claim: the plan workflow appends it to its calls' idempotency keys, so a callee that
-- caches answers per key runs a retried call again instead of replaying the old failure.
-- (A constant default: existing rows are not rewritten.)
alter table missions add column retry_generation integer not null default 0;
