-- Webhooks out (Standard Webhooks): endpoints an admin registers, one queued delivery per
-- (event, endpoint) written in the same transaction as the event, and every attempt's outcome.

create table webhook_endpoints (
    id                     bigint generated always as identity primary key,
    url                    text not null,
    description            text,
    -- `alert.flagged`, `alert.corrected`, `alert.retracted`, `alert.delivered`.
    event_types            text[] not null,
    -- `whsec_<base64>`: the receiver needs it to verify, so it is kept as given, not hashed.
    secret                 text not null,
    -- After a rotation the previous secret also signs until `previous_secret_until`, so a
    -- receiver can switch to the new one at its own pace.
    previous_secret        text,
    previous_secret_until  timestamptz,
    enabled                boolean not null default true,
    disabled_at            timestamptz,
    disabled_reason        text,
    -- First failed attempt since the last success: the endpoint is disabled once this is older
    -- than `webhook_disable_after_secs`.
    failing_since          timestamptz,
    last_success_at        timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);

-- One event for one endpoint. `message_id` is the `webhook-id` header: the same on every try and
-- for every endpoint of the event, so receivers drop duplicates by it. `body` is kept as sent:
-- every try signs the same bytes. A pending row whose `next_attempt_at` has passed is due;
-- claiming it moves `next_attempt_at` past the attempt's time limit (the lease), so a process
-- that dies mid-attempt leaves it due again for another.
create table webhook_deliveries (
    id               bigint generated always as identity primary key,
    endpoint_id      bigint not null references webhook_endpoints (id) on delete cascade,
    message_id       text not null,
    event_type       text not null,
    body             text not null,
    state            text not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    created_at       timestamptz not null default now(),
    finished_at      timestamptz,
    last_error       text,
    unique (message_id, endpoint_id)
);
create index webhook_deliveries_due on webhook_deliveries (endpoint_id, next_attempt_at) where state = 'pending';
create index webhook_deliveries_finished on webhook_deliveries (finished_at) where state <> 'pending';

-- Every attempt, for the endpoint's page of recent attempts.
create table webhook_attempts (
    id            bigint generated always as identity primary key,
    endpoint_id   bigint not null references webhook_endpoints (id) on delete cascade,
    delivery_id   bigint not null references webhook_deliveries (id) on delete cascade,
    attempted_at  timestamptz not null default now(),
    http_status   smallint,
    latency_ms    integer not null,
    error         text
);
create index webhook_attempts_recent on webhook_attempts (endpoint_id, id desc);
create index webhook_attempts_delivery on webhook_attempts (delivery_id);
