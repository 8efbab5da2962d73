-- Orders, their items, the idempotency guard and failed creations.
-- Money is NUMERIC(12,2); times are TIMESTAMPTZ (UTC).

CREATE TABLE orders (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      UUID          NOT NULL,
    user_id       BIGINT        NOT NULL CHECK (user_id > 0),
    product_id    BIGINT        NOT NULL CHECK (product_id > 0),
    quantity      INTEGER       NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price    NUMERIC(12,2) NOT NULL CHECK (unit_price > 0),
    total_amount  NUMERIC(12,2) NOT NULL CHECK (total_amount > 0),
    status        VARCHAR(16)   NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'completed', 'cancelled', 'failed')),
    seckill_id    VARCHAR(64)   NOT NULL,
    created_at    TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT orders_order_id_key UNIQUE (order_id)
);
-- A user's orders, newest first (id breaks ties for keyset paging).
CREATE INDEX orders_user_created_idx ON orders (user_id, created_at DESC, id DESC);
-- Daily statistics.
CREATE INDEX orders_created_idx ON orders (created_at);
-- Unpaid-order expiry and status filters.
CREATE INDEX orders_status_created_idx ON orders (status, created_at);

CREATE TABLE order_items (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      UUID          NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    product_id    BIGINT        NOT NULL,
    product_name  VARCHAR(255),
    quantity      INTEGER       NOT NULL,
    unit_price    NUMERIC(12,2) NOT NULL,
    total_price   NUMERIC(12,2) NOT NULL
);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);

-- Exactly one order per (user, product): the unique key is the guard,
-- written in the same transaction as the order.
CREATE TABLE idempotency_records (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT        NOT NULL,
    product_id    BIGINT        NOT NULL,
    order_id      UUID          NOT NULL,
    created_at    TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_user_product_key UNIQUE (user_id, product_id)
);

CREATE TABLE order_failures (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_data   TEXT          NOT NULL,
    -- SHA-256 of the raw message: a redelivered message is recorded once.
    message_digest CHAR(64)      NOT NULL,
    error_message  TEXT          NOT NULL,
    retry_count    INTEGER       NOT NULL DEFAULT 0,
    status         VARCHAR(16)   NOT NULL
                   CHECK (status IN ('pending', 'processing', 'success', 'failed')),
    retryable      BOOLEAN       NOT NULL,
    source         VARCHAR(16)   NOT NULL
                   CHECK (source IN ('rabbitmq', 'kafka', 'api', 'compensator')),
    next_retry_at  TIMESTAMPTZ   NOT NULL,
    locked_until   TIMESTAMPTZ,
    -- Written with a claim; only its holder may resolve the claim.
    lease_token    UUID,
    order_id       UUID,
    created_at     TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CONSTRAINT order_failures_message_digest_key UNIQUE (message_digest)
);
-- Due claims and lease expiry.
CREATE INDEX order_failures_status_due_idx ON order_failures (status, next_retry_at);
-- Operator listings and purging.
CREATE INDEX order_failures_status_updated_idx ON order_failures (status, updated_at);
