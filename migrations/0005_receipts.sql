-- Shown/clicked receipts tied to the push they report on.
--
-- Every push carries a receipt token: an HMAC of (alert id, subscription id) under this
-- installation's receipt key, so nothing is stored per push and nobody without the key can make
-- one. Like the VAPID key, the first process to start creates it and every process reads it back;
-- whoever can read this table can already change the figures directly.
create table push_receipt_key (
    id          smallint primary key default 1 check (id = 1),
    secret      bytea not null check (length(secret) = 32),
    created_at  timestamptz not null default now()
);

-- When the reader's browser reported the push shown and clicked. A receipt counts only by setting
-- one of these on a row whose status is 'sent', and only while it is null: once per event per
-- delivery, so the figures can never exceed `sent`. (Nullable without a default: instant on the
-- partitioned log, no rewrite.)
alter table push_deliveries
    add column shown_at timestamptz,
    add column clicked_at timestamptz;
