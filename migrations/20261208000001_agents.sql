-- The agent registry: external HTTP services that plan steps of kind `agent` are routed to.
-- Liveness is not kept here but in Redis (`agents:heartbeat:<name>`, expiring); this table keeps
-- what an admin registered and when the agent was last heard of, which outlives the Redis key.
-- The call secret is what HyperCode presents to the agent (`Authorization: Bearer ...`); like the
-- `secrets` table it is stored as given, and no API route returns it.
create table agents (
    name text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$'),
    url text not null,
    capabilities text[] not null,
    call_secret text not null,
    last_heartbeat timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- An API key of role `agent` may be bound to one agent name: it may heartbeat for that agent
-- only, and read the missions that agent answered a step of. The agent need not be registered
-- yet (a deployment creates the key before it registers the agent), so there is no foreign key.
alter table api_keys add column agent text
    check (agent is null or (role = 'agent' and agent ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$'));
