-- Each table has one owner module, the only one that writes it (docs/ARCHITECTURE.md). The
-- receipt counters were columns of alert_stats, the alerts module's ticker figures, but the push
-- module wrote them; they move to a table of their own, which the push module owns. One row per
-- alert, as before: receipts of one alert meet on one row, never on the fan-out's push_jobs row.
create table push_receipt_counts (
    alert_id uuid primary key references alerts (id) on delete cascade,
    shown    bigint not null default 0,
    clicked  bigint not null default 0
);

insert into push_receipt_counts (alert_id, shown, clicked)
select alert_id, push_shown, push_clicked from alert_stats where push_shown > 0 or push_clicked > 0;

alter table alert_stats drop column push_shown, drop column push_clicked;
