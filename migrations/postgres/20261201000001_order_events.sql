-- The transactional outbox: one row per committed change of an order,
-- written in the change's own transaction, published by the relay.
CREATE TABLE order_events (
    -- Write order: per order, events are published in this order.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The CloudEvents id (UUID v7), the same in every re-send.
    event_id        UUID          NOT NULL,
    order_id        UUID          NOT NULL,
    event_type      VARCHAR(32)   NOT NULL
                    CHECK (event_type IN ('order.created', 'order.completed', 'order.cancelled',
                                          'order.failed', 'order.expired')),
    -- What changed. The CloudEvent sent is rendered from these and the
    -- order's fixed fields (orders), the same bytes at every re-send: the
    -- row stays a fraction of the event's size.
    previous_status VARCHAR(16),
    status          VARCHAR(16)   NOT NULL,
    version         INTEGER       NOT NULL,
    reason          TEXT,
    -- The W3C trace context of the change, sent as a header.
    traceparent     VARCHAR(55),
    created_at      TIMESTAMPTZ   NOT NULL,
    -- Set once a broker confirmed the event.
    published_at    TIMESTAMPTZ,
    -- Publishing attempts that failed, and when to try again.
    attempts        INTEGER       NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ   NOT NULL,
    last_error      TEXT
);
-- Every index is written with each event and again when it is published,
-- so there are only the two the relay needs (a relay's claim is a row lock
-- held while it publishes, not a write; ids are made unique by UUIDv7, and
-- retention walks the primary key).
-- The relay's claims: unpublished events in write order.
CREATE INDEX order_events_unpublished_idx ON order_events (seq) WHERE published_at IS NULL;
-- An order's events (the per-order order, and the operators' listing).
CREATE INDEX order_events_order_idx ON order_events (order_id, seq);

-- Wakes the relays (LISTEN order_events) when a transaction that wrote
-- events commits: PostgreSQL delivers a notification at commit, once per
-- transaction for the same payload, and never for a rollback.
CREATE FUNCTION order_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER order_events_notify AFTER INSERT ON order_events
    FOR EACH STATEMENT EXECUTE FUNCTION order_events_notify();
