-- Agents' call secrets sealed at rest (AES-256-GCM, see agents/src/sealing.rs): the sealed form
-- goes in `call_secret_sealed` and `call_secret` stays null. Rows written before this migration
-- keep their plain secret until the server re-seals them at startup (reading handles both).
--
-- `sealing_key` holds the key used when HYPERCODE_SECRETS_KEY is not set: 32 bytes from two
-- random UUIDs (gen_random_uuid draws from the server's strong random source; 244 of the 256
-- bits are random). It keeps a copy of the `agents` table alone from revealing the secrets;
-- HYPERCODE_SECRETS_KEY keeps the key out of the database altogether.
create table sealing_key (
    id smallint primary key default 1 check (id = 1),
    key bytea not null check (length(key) = 32),
    created_at timestamptz not null default now()
);
insert into sealing_key (key) values (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));

alter table agents add column call_secret_sealed bytea;
alter table agents alter column call_secret drop not null;
alter table agents add constraint agents_call_secret_kept
    check (call_secret is not null or call_secret_sealed is not null);
