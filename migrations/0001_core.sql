-- The service core: editor tokens, alerts, the ticker event log, idempotency keys and figures.

-- Editors authenticate with a bearer token; only its SHA-256 is stored. Tokens are 256-bit
-- random values, so a fast hash is enough (no password stretching needed).
create table editor_tokens (
    id            bigint generated always as identity primary key,
    name          text not null check (char_length(name) between 1 and 100),
    role          text not null check (role in ('editor', 'admin')),
    token_hash    bytea not null unique,
    -- The first characters of the token, so that `token list` can tell tokens apart.
    hint          text not null,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

create table alerts (
    -- UUIDv7: time-ordered, so `order by id desc` is newest first and a page cursor is an id.
    id            uuid primary key,
    -- The seq of the stream event that published the alert; null while it is scheduled.
    seq           bigint unique,
    status        text not null check (status in ('scheduled', 'live', 'retracted')),
    label         text not null,
    headline      text not null,
    summary       text,
    url           text not null,
    image         text,
    article_id    text,
    -- What makes two flags "the same article": the CMS id, or the URL when there is none.
    dedupe_key    text not null,
    topics        text[] not null default '{}',
    urgency       text not null check (urgency in ('very-low', 'low', 'normal', 'high')),
    ttl_seconds   integer not null check (ttl_seconds > 0),
    send_at       timestamptz,
    created_at    timestamptz not null default now(),
    published_at  timestamptz,
    updated_at    timestamptz not null default now(),
    retracted_at  timestamptz,
    retract_reason text,
    created_by    bigint references editor_tokens (id)
);

-- Finding the live alert for an article when it is flagged again.
create index alerts_dedupe_key on alerts (dedupe_key) where status <> 'retracted';
-- The scheduler's queue.
create index alerts_scheduled on alerts (send_at) where status = 'scheduled';

-- Everything a ticker is sent, in order. `seq` comes from one sequence, assigned under a
-- transaction-scoped advisory lock so that events commit in seq order: a reader that has seen
-- seq N has seen every event below N that will ever exist.
create sequence stream_seq as bigint;

create table stream_events (
    seq         bigint primary key,
    alert_id    uuid not null references alerts (id) on delete cascade,
    kind        text not null check (kind in ('alert', 'update', 'retract')),
    topics      text[] not null,
    -- The exact JSON text frame sent to tickers: serialised once, by the writer.
    frame       text not null,
    created_at  timestamptz not null default now()
);

-- Idempotency-Key: the first answer to a key is stored and replayed for repeats.
create table idempotency_keys (
    token_id      bigint not null references editor_tokens (id) on delete cascade,
    key           text not null,
    request_hash  bytea not null,
    status        smallint not null,
    body          text not null,
    created_at    timestamptz not null default now(),
    primary key (token_id, key)
);

-- Live delivery figures, summed over every server process.
create table alert_stats (
    alert_id         uuid primary key references alerts (id) on delete cascade,
    tickers_reached  bigint not null default 0
);
