-- Feeds in (issue 13): RSS/Atom/JSON feeds an admin registers, polled by every `serve` process
-- in turn, and the items seen in them.

create table feeds (
    id              uuid primary key,
    url             text not null unique,
    -- What admins and editors see the feed as ("Son dakika kategorisi").
    name            text not null,
    -- The label of the alerts it makes (default SON DAKİKA).
    label           text not null,
    topics          text[] not null default '{}',
    -- suggest: items become drafts an editor sends; auto: items are flagged at once.
    mode            text not null check (mode in ('suggest', 'auto')),
    -- auto only fires items whose title starts with this (case-insensitive, Turkish-aware)...
    title_prefix    text,
    -- ...and that carry this category or tag (case-insensitive).
    category        text,
    interval_secs   integer not null check (interval_secs > 0),
    enabled         boolean not null default true,
    -- The admin who registered it: the alerts it flags are theirs.
    created_by      bigint not null references editor_tokens (id),
    created_at      timestamptz not null default now(),
    -- Polling state. One process at a time holds a feed: it sets lease_until with
    -- `for update skip locked` and releases it when the poll's outcome is written.
    next_poll_at    timestamptz not null default now(),
    lease_until     timestamptz,
    etag            text,
    last_modified   text,
    -- Consecutive failed polls: the backoff grows with them.
    failures        integer not null default 0,
    last_polled_at  timestamptz,
    last_success_at timestamptz,
    -- The last failure in words, cleared by a success.
    last_error      text,
    last_error_at   timestamptz,
    -- What the last successful poll did.
    last_status     integer,
    last_new_items  integer not null default 0
);

-- The pollers' queue.
create index feeds_due on feeds (next_poll_at) where enabled;

-- Every item ever seen in a feed, once: the primary key is what makes an item alert once, across
-- restarts and processes (only the transaction that inserts the row acts on the item).
create table feed_items (
    id            uuid primary key,
    feed_id       uuid not null references feeds (id) on delete cascade,
    -- The item's guid (or link), as the alert's article_id.
    article_id    text not null,
    headline      text not null,
    summary       text,
    url           text not null,
    image         text,
    published_at  timestamptz,
    -- draft: waiting for an editor (suggest); sent: an alert was flagged from it; dismissed:
    -- an editor put it aside; skipped: seen but not for alerting (too old, filtered out, or
    -- present when the feed was registered).
    state         text not null check (state in ('draft', 'sent', 'dismissed', 'skipped')),
    -- Why it was skipped, in words.
    note          text,
    alert_id      uuid references alerts (id) on delete set null,
    seen_at       timestamptz not null default now(),
    unique (feed_id, article_id)
);

-- The console's list of drafts, newest first.
create index feed_items_drafts on feed_items (seen_at desc) where state = 'draft';
