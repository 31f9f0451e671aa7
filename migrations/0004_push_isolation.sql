-- Push services that cannot be reached slow only the pushes addressed to them.

-- Pushes waiting for another try, off the fan-out's path: a range of subscribers is done once
-- every push in it has had its first try; whatever must be tried again waits here, and any
-- process's retry worker claims it when it is due (`for update skip locked`, with a lease, so a
-- crashed process's retries are taken over). A subscriber with a row here has no outcome in the
-- delivery log yet: it counts as pending.
create table push_retries (
    alert_id         uuid not null references push_jobs (alert_id) on delete cascade,
    subscription_id  bigint not null,
    -- Tries that reached (or tried to reach) the push service so far.
    attempts         smallint not null,
    -- Times the push was put off without a try because its push service was down or paused.
    deferrals        smallint not null default 0,
    not_before       timestamptz not null,
    lease_until      timestamptz,
    http_status      smallint,
    error            text,
    primary key (alert_id, subscription_id)
);
create index push_retries_due on push_retries (not_before);

-- A subscription whose push service keeps failing it (unreachable, timing out, 5xx until the
-- push gave up) across alerts and time is deactivated with the reason 'unreachable', as a 410
-- deactivates with 'gone' (rule and settings: README, "Web Push").
alter table push_subscriptions
    add column failed_alerts  integer not null default 0,
    add column failing_since  timestamptz;
-- Every successful push clears the count; this index keeps that a probe of a tiny index.
create index push_subscriptions_failing on push_subscriptions (id) where failed_alerts > 0;
