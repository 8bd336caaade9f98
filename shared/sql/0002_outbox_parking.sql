-- An event the broker can never accept (larger than its message limit) is
-- parked instead of blocking every event behind it: failed_at and failure say
-- when and why, and the relay's scan skips it.
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN failure text;

DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id)
    WHERE published_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_parked ON outbox (failed_at) WHERE failed_at IS NOT NULL;
