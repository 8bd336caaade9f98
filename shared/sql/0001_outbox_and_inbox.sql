-- Tables every service schema carries. The search_path points at the schema
-- being migrated, so these names land there.

-- Events written in the same transaction as the state change they describe.
-- The relay publishes rows in id order and stamps published_at; published rows
-- are purged after a retention period.
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    key bytea NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL,
    published_at timestamptz
) WITH (fillfactor = 70);

-- The relay's scan: only unpublished rows, oldest first.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
-- The purge's scan.
CREATE INDEX outbox_published_at ON outbox (published_at)
    WHERE published_at IS NOT NULL;

-- Hot, short-lived rows: vacuum early so dead tuples do not pile up.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);

-- Event ids a consumer group has applied, recorded in the same transaction as
-- the effect, so a redelivered event is recognised and skipped.
CREATE TABLE processed_events (
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
