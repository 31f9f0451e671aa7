-- Web Push: the VAPID identity, subscriptions, durable fan-out work and the delivery log.

-- The installation's VAPID key pair, shared by every process (single row). The private key is
-- the raw P-256 scalar in base64url; whoever can read this table can already do anything.
create table vapid_keys (
    id           smallint primary key default 1 check (id = 1),
    private_key  text not null,
    public_key   bytea not null,
    created_at   timestamptz not null default now()
);

create table push_subscriptions (
    id                  bigint generated always as identity primary key,
    -- A capability URL: never logged, only its host.
    endpoint            text not null unique,
    origin              text not null,
    host                text not null,
    p256dh              bytea not null check (length(p256dh) = 65),
    auth                bytea not null check (length(auth) = 16),
    topics              text[] not null default '{}',
    locale              text not null default 'tr',
    -- The applicationServerKey the browser subscribed with; start-up checks it still matches.
    vapid_key           bytea not null,
    active              boolean not null default true,
    created_at          timestamptz not null default now(),
    last_seen_at        timestamptz not null default now(),
    deactivated_at      timestamptz,
    deactivated_reason  text
);
create index push_subscriptions_topics on push_subscriptions using gin (topics) where active;
create index push_subscriptions_last_seen on push_subscriptions (last_seen_at) where active;

-- One fan-out per published alert. Counters are updated with each flushed batch of results, so
-- the figures are one row read, even with a million targets.
create table push_jobs (
    alert_id        uuid primary key references alerts (id) on delete cascade,
    state           text not null check (state in ('planning', 'running', 'done', 'cancelled')),
    alert_day       date not null,
    targeted        bigint not null default 0,
    sent            bigint not null default 0,
    failed          bigint not null default 0,
    gone            bigint not null default 0,
    expired         bigint not null default 0,
    skipped         bigint not null default 0,
    created_at      timestamptz not null default now(),
    started_at      timestamptz,
    reached_50_at   timestamptz,
    reached_95_at   timestamptz,
    reached_100_at  timestamptz
);
create index push_jobs_planning on push_jobs (created_at) where state = 'planning';

-- The work of one fan-out, cut into ranges of subscription ids. Any process claims a pending
-- (or abandoned: lease expired) range with `for update skip locked`.
create table push_batches (
    alert_id     uuid not null references push_jobs (alert_id) on delete cascade,
    first_id     bigint not null,
    last_id      bigint not null,
    state        text not null check (state in ('pending', 'running', 'done')),
    lease_until  timestamptz,
    primary key (alert_id, first_id)
);
create index push_batches_todo on push_batches (alert_id, first_id) where state <> 'done';

-- One row per (alert, subscription): written once, with the final outcome, in batches.
-- Partitioned by the alert's publication day so that old logs are removed by dropping a
-- partition: no long delete, no bloat.
create table push_deliveries (
    alert_day        date not null,
    alert_id         uuid not null,
    subscription_id  bigint not null,
    status           text not null check (status in ('sent', 'failed', 'gone', 'expired', 'skipped')),
    http_status      smallint,
    attempts         smallint not null default 0,
    push_host        text not null,
    latency_ms       integer,
    error            text,
    finished_at      timestamptz not null default now(),
    primary key (alert_day, alert_id, subscription_id)
) partition by range (alert_day);
-- Catches anything outside the daily partitions that housekeeping creates ahead.
create table push_deliveries_default partition of push_deliveries default;

-- Shown/clicked receipts from service workers.
alter table alert_stats
    add column push_shown bigint not null default 0,
    add column push_clicked bigint not null default 0;
