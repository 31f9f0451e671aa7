-- An alert's whole life reaches devices: the original push, each correction and the retraction
-- are fan-outs of their own, called steps (0 = the original). Each step has its job row, ranges,
-- retries, delivery-log rows and figures; the durable fan-out works the same for all of them.

-- Goes up by one with each correction. A push carries the revision it was encrypted with, so a
-- correction step knows who still shows an older one.
alter table alerts add column revision integer not null default 0;

alter table push_batches drop constraint push_batches_alert_id_fkey;
alter table push_retries drop constraint push_retries_alert_id_fkey;
alter table push_jobs drop constraint push_jobs_pkey;
alter table push_jobs
    add column step smallint not null default 0,
    add column kind text not null default 'alert' check (kind in ('alert', 'correction', 'retraction')),
    -- The alert's revision when the step was asked for (a correction step targets those who were
    -- sent an older one; its pushes carry the alert as it reads when they are encrypted).
    add column revision integer not null default 0,
    -- A quiet correction replaces the notification without a second sound or vibration.
    add column quiet boolean not null default false,
    -- When the editor's change was made (the last one, for corrections that were coalesced):
    -- what the step's ms_to_* count from.
    add column requested_at timestamptz not null default now(),
    -- A correction waits this long for further corrections, which join it (coalescing).
    add column not_before timestamptz;
alter table push_jobs add primary key (alert_id, step);
-- The steps waiting to be planned (the planner's scan).
drop index push_jobs_planning;
create index push_jobs_planning on push_jobs (created_at) where state = 'planning';

alter table push_batches add column step smallint not null default 0;
alter table push_batches drop constraint push_batches_pkey;
alter table push_batches add primary key (alert_id, step, first_id);
alter table push_batches add foreign key (alert_id, step) references push_jobs (alert_id, step) on delete cascade;
drop index push_batches_todo;
create index push_batches_todo on push_batches (alert_id, step, first_id) where state <> 'done';

alter table push_retries add column step smallint not null default 0;
alter table push_retries drop constraint push_retries_pkey;
alter table push_retries add primary key (alert_id, step, subscription_id);
alter table push_retries add foreign key (alert_id, step) references push_jobs (alert_id, step) on delete cascade;
-- "Does this subscriber wait for a retry of this alert, in any step?"
create index push_retries_subscriber on push_retries (alert_id, subscription_id);

-- The log keys a subscriber's rows of one alert together (subscription before step): a correction
-- step reads, per subscriber, every step's outcome in one index range.
alter table push_deliveries
    add column step smallint not null default 0,
    add column revision integer not null default 0;
alter table push_deliveries drop constraint push_deliveries_pkey;
alter table push_deliveries add primary key (alert_day, alert_id, subscription_id, step);
