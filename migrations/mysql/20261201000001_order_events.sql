-- The transactional outbox: one row per committed change of an order,
-- written in the change's own transaction, published by the relay.
CREATE TABLE order_events (
    -- Write order: per order, events are published in this order.
    seq             BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    -- The CloudEvents id (UUID v7), the same in every re-send.
    event_id        BINARY(16)    NOT NULL,
    order_id        BINARY(16)    NOT NULL,
    event_type      VARCHAR(32)   NOT NULL,
    -- What changed. The CloudEvent sent is rendered from these and the
    -- order's fixed fields (orders), the same bytes at every re-send: the
    -- row stays a fraction of the event's size.
    previous_status VARCHAR(16)   NULL,
    status          VARCHAR(16)   NOT NULL,
    version         INT           NOT NULL,
    reason          TEXT          NULL,
    -- The W3C trace context of the change, sent as a header.
    traceparent     VARCHAR(55)   NULL,
    created_at      DATETIME(6)   NOT NULL,
    -- Set once a broker confirmed the event.
    published_at    DATETIME(6)   NULL,
    -- Publishing attempts that failed, and when to try again.
    attempts        INT           NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(6)   NOT NULL,
    last_error      TEXT          NULL,
    -- No unique key on event_id: ids are made unique by UUIDv7, and every
    -- index is written with each event and again when it is published.
    CONSTRAINT order_events_type_check CHECK (event_type IN ('order.created', 'order.completed',
        'order.cancelled', 'order.failed', 'order.expired')),
    -- The relay's claims (unpublished: NULL, in write order) and retention.
    INDEX order_events_published_idx (published_at, seq),
    -- An order's events (the per-order order, and the operators' listing).
    INDEX order_events_order_idx (order_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
