-- A completed Checkout Session looks up the `charge.refunded` events already stored for its
-- payment intent (a refund may arrive before the completion it refunds): this finds them
-- without reading every stored event. The expression is the one the lookup uses.
create index stripe_events_refunds_by_payment_intent on stripe_events (
    (coalesce(payload #>> '{data,object,payment_intent,id}', payload #>> '{data,object,payment_intent}'))
) where type = 'charge.refunded';

-- The balance is the sum of the ledger, kept so by the database and not only by the code: it
-- starts at 0, and only the ledger's own trigger (`ledger_entries_apply`, one trigger level
-- down) may move it. Any other write of it, by any client, is refused; the arrears and the
-- rest of the row stay writable.
create function accounts_balance_from_ledger() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' and new.balance <> 0 then
        raise exception 'an account starts with a balance of 0; the ledger moves it'
            using errcode = 'insufficient_privilege';
    end if;
    if tg_op = 'UPDATE' and new.balance <> old.balance and pg_trigger_depth() < 2 then
        raise exception 'the balance is the sum of the ledger: write a ledger entry instead'
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end;
$$;

create trigger accounts_balance_from_ledger before insert or update on accounts
    for each row execute function accounts_balance_from_ledger();
