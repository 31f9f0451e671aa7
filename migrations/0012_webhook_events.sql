-- An event for webhooks waits here, written in the event's own transaction, until a webhook worker
-- expands it into one `webhook_deliveries` row per enabled endpoint subscribed to it. The event's
-- transaction then writes one row whatever the number of endpoints (a row per endpoint made an
-- alert's POST as slow as its endpoints were many), and stays durable: committed means queued. Expanding deletes the
-- event and inserts its deliveries in one statement, so an event is expanded exactly once.
create table webhook_events (
    id          bigint generated always as identity primary key,
    -- The `webhook-id` of every delivery of the event.
    message_id  text not null unique,
    event_type  text not null,
    -- The body as it will be sent to every endpoint.
    body        text not null,
    -- When the event happened: the retry window of its deliveries counts from here.
    created_at  timestamptz not null default now()
);

-- Due deliveries across every endpoint, soonest first: an idle worker's look for work is one probe
-- of this index rather than a pass over every enabled endpoint.
create index webhook_deliveries_next on webhook_deliveries (next_attempt_at) where state = 'pending';
