-- Server-side secrets that plans reference as `{{secrets.NAME}}`: admins set them through the API
-- or CLI, workers read them only when a step calls out, and no API route returns a value. Values
-- are stored as plain text: whoever can read this database can read the secrets.
create table secrets (
    name text primary key check (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    value text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
