-- Drafts, live: whenever the list of drafts can have changed (a poller stored a draft, an editor
-- sent or dismissed one, a feed was renamed or removed), PostgreSQL says so on the channel
-- `sondakika_drafts`, in the writing transaction, so that every process's consoles learn of it
-- whichever process wrote. A trigger rather than a call beside each write: the list is a view of
-- two tables written from several places, and a writer added later cannot forget to say it.
-- NOTIFY carries nothing; listeners read the list themselves (src/feeds/live.rs), and
-- notifications with the same payload in one transaction arrive once.
create function feeds_drafts_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('sondakika_drafts', '');
    return null;
end
$$;

create trigger feed_items_draft_added after insert on feed_items
    for each row when (new.state = 'draft') execute function feeds_drafts_changed();
create trigger feed_items_draft_changed after update on feed_items
    for each row when (old.state = 'draft' or new.state = 'draft') execute function feeds_drafts_changed();
create trigger feed_items_draft_removed after delete on feed_items
    for each row when (old.state = 'draft') execute function feeds_drafts_changed();
-- A draft shows its feed's name, label and topics.
create trigger feeds_shown_with_drafts after update of name, label, topics on feeds
    for each statement execute function feeds_drafts_changed();
