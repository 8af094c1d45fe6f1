-- Dashboard sessions: a browser signs in with an API key once and then holds a session cookie.
-- Only the cookie's SHA-256 is stored (like API keys), so a leaked table cannot be replayed.
-- A session acts with its key's name and role and dies with the key: revoking the key ends it.
create table sessions (
    token_hash bytea primary key,
    key_id     uuid not null references api_keys (id) on delete cascade,
    -- The synchronizer token every form and action of this session must carry.
    csrf       text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);

-- Expired sessions are deleted by range when new ones are created.
create index sessions_by_expiry on sessions (expires_at);
