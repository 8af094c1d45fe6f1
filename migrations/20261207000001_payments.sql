-- Payments and the token economy (issue 13): accounts, the append-only token ledger, Stripe
-- events as received, payments, subscriptions and entitlements.
--
-- The ledger is the truth and the database keeps it honest: every insert into `ledger_entries`
-- moves its account's `balance` in the same statement (a trigger), the balance may never go
-- below zero (a check constraint), so an overdraft fails the insert itself, whoever wrote it and
-- however many spends race; and entries can be neither changed nor deleted.

create table accounts (
    id text primary key check (id ~ '^[A-Za-z0-9_.@-]{1,200}$'),
    balance bigint not null default 0 constraint accounts_balance_non_negative check (balance >= 0),
    -- Tokens taken back by a refund that had already been spent: owed, never a negative balance.
    arrears bigint not null default 0 check (arrears >= 0),
    created_at timestamptz not null default now()
);

create type ledger_kind as enum ('award', 'spend', 'purchase', 'refund', 'reversal', 'shop');

create table ledger_entries (
    id bigint generated always as identity primary key,
    account text not null references accounts (id),
    amount bigint not null check (amount <> 0),
    kind ledger_kind not null,
    reason text not null default '',
    reference text,
    idempotency_key text not null constraint ledger_entries_idempotency_key unique,
    -- The account's balance right after this entry (set by the trigger), so a replayed request
    -- is answered exactly as the first one was.
    balance_after bigint not null default 0,
    at timestamptz not null default now()
);

create index ledger_entries_by_account on ledger_entries (account, id desc);
create index ledger_entries_by_reference on ledger_entries (reference) where reference is not null;

-- Two triggers, so that an `insert ... on conflict do nothing` that inserts nothing moves no
-- balance: BEFORE (which runs even for a row that then conflicts) only locks the account and
-- computes the entry's `balance_after`; AFTER (which runs only for a row really inserted)
-- moves the balance, where the check constraint refuses an overdraft and fails the insert.
create function ledger_entries_balance_after() returns trigger language plpgsql as $$
declare
    current bigint;
begin
    select balance into current from accounts where id = new.account for update;
    if not found then
        raise exception 'account % does not exist', new.account using errcode = 'foreign_key_violation';
    end if;
    new.balance_after := current + new.amount;
    return new;
end;
$$;

create trigger ledger_entries_balance_after before insert on ledger_entries
    for each row execute function ledger_entries_balance_after();

create function ledger_entries_apply() returns trigger language plpgsql as $$
begin
    update accounts set balance = balance + new.amount where id = new.account;
    return null;
end;
$$;

create trigger ledger_entries_apply after insert on ledger_entries
    for each row execute function ledger_entries_apply();

create function ledger_entries_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the token ledger is append-only' using errcode = 'insufficient_privilege';
end;
$$;

create trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function ledger_entries_append_only();

-- Every verified Stripe event, by its id, as it was received.
create table stripe_events (
    id text primary key,
    type text not null,
    api_version text,
    -- Stripe's `created` (Unix seconds): what orders events about one object.
    created bigint not null,
    payload jsonb not null,
    received_at timestamptz not null default now(),
    applied_at timestamptz,
    -- What applying it did, in words (`credited 500 tokens to ...`, `ignored: ...`).
    outcome text
);

-- Money received or attempted: a completed Checkout Session or an invoice.
create table payments (
    id bigint generated always as identity primary key,
    -- The session's or the invoice's id.
    stripe_id text not null unique,
    object text not null check (object in ('checkout_session', 'invoice')),
    account text references accounts (id),
    item text,
    payment_intent text,
    subscription text,
    amount bigint not null default 0,
    currency text,
    status text not null,
    -- Tokens this payment credited, and how many of them refunds took back so far.
    tokens bigint not null default 0 check (tokens >= 0),
    reversed_tokens bigint not null default 0 check (reversed_tokens >= 0),
    created bigint not null,
    recorded_at timestamptz not null default now()
);

create index payments_by_payment_intent on payments (payment_intent) where payment_intent is not null;
create index payments_by_account on payments (account, id desc);

create table subscriptions (
    id text primary key,
    account text references accounts (id),
    plan text,
    course text,
    customer text,
    -- In Stripe's words: active, past_due, canceled, ...
    status text not null,
    -- The `created` of the event that set `status`: an older event never overwrites a newer one.
    status_at bigint not null,
    updated_at timestamptz not null default now()
);

create index subscriptions_by_account on subscriptions (account);

-- What an account has been granted: a course (through a subscription) or a shop item.
create table entitlements (
    id bigint generated always as identity primary key,
    account text not null references accounts (id),
    kind text not null check (kind in ('course', 'shop')),
    item text not null,
    -- The subscription id of a course, the purchase's idempotency key of a shop item.
    source text not null,
    granted_at timestamptz not null default now(),
    unique (kind, source, item)
);

create index entitlements_by_account on entitlements (account, id desc);
