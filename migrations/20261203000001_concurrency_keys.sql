-- Concurrency keys: missions sharing a key run one at a time, in submission order. A worker may
-- claim a keyed mission only while no earlier mission of its key is live; this index answers
-- that question for the claim.
alter table missions add column concurrency_key text
    constraint missions_concurrency_key_length check (char_length(concurrency_key) between 1 and 200);
create index missions_live_by_concurrency_key on missions (concurrency_key, created_at, id)
    where concurrency_key is not null and status in ('pending', 'running', 'waiting');

-- When a keyed mission finishes, its successor (the oldest live mission of the key) is made due
-- now: its last wake-up was refused while it was blocked, and the reconciler re-sends a wake-up to
-- a pending mission with no recent one. In the database, so every path that finishes a mission
-- (a worker, a cancellation, a retry's compensations) hands the key on.
create function missions_hand_on_concurrency_key() returns trigger language plpgsql as $$
begin
    update missions set enqueued_at = null
    where id = (
        select id from missions
        where concurrency_key = new.concurrency_key and status = 'pending'
        order by created_at, id
        limit 1
    );
    return null;
end;
$$;

create trigger missions_hand_on_concurrency_key
    after update of status on missions
    for each row
    when (new.concurrency_key is not null
          and new.status in ('succeeded', 'failed', 'cancelled')
          and old.status not in ('succeeded', 'failed', 'cancelled'))
    execute function missions_hand_on_concurrency_key();
