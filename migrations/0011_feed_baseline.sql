-- A feed's baseline: what it holds at its first successful poll was there before anything could
-- be new, and never fires, whatever its dates. Null until that poll; set back to null when the
-- feed is given a new URL or re-enabled after a pause, so that the next successful poll takes a
-- new baseline (the new URL's items, or what appeared while the feed was paused, never fire).
alter table feeds add column baseline_at timestamptz;

-- Feeds polled successfully before this column existed have their baseline already.
update feeds set baseline_at = last_success_at where last_success_at is not null;
