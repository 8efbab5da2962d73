-- Orders, their items, the idempotency guard and failed creations.
-- Money is DECIMAL(12,2); times are DATETIME(6) in UTC; UUIDs are BINARY(16).
-- Claims use FOR UPDATE SKIP LOCKED: MySQL 8 or MariaDB >= 10.6.

CREATE TABLE orders (
    id            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id      BINARY(16)    NOT NULL,
    user_id       BIGINT        NOT NULL,
    product_id    BIGINT        NOT NULL,
    quantity      INT           NOT NULL,
    unit_price    DECIMAL(12,2) NOT NULL,
    total_amount  DECIMAL(12,2) NOT NULL,
    status        VARCHAR(16)   NOT NULL DEFAULT 'pending',
    seckill_id    VARCHAR(64)   NOT NULL,
    created_at    DATETIME(6)   NOT NULL,
    updated_at    DATETIME(6)   NOT NULL,
    CONSTRAINT orders_order_id_key UNIQUE (order_id),
    CONSTRAINT orders_user_id_check CHECK (user_id > 0),
    CONSTRAINT orders_product_id_check CHECK (product_id > 0),
    CONSTRAINT orders_quantity_check CHECK (quantity BETWEEN 1 AND 1000),
    CONSTRAINT orders_unit_price_check CHECK (unit_price > 0),
    CONSTRAINT orders_total_amount_check CHECK (total_amount > 0),
    CONSTRAINT orders_status_check CHECK (status IN ('pending', 'completed', 'cancelled', 'failed')),
    INDEX orders_user_created_idx (user_id, created_at DESC, id DESC),
    INDEX orders_created_idx (created_at),
    INDEX orders_status_created_idx (status, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE order_items (
    id            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id      BINARY(16)    NOT NULL,
    product_id    BIGINT        NOT NULL,
    product_name  VARCHAR(255)  NULL,
    quantity      INT           NOT NULL,
    unit_price    DECIMAL(12,2) NOT NULL,
    total_price   DECIMAL(12,2) NOT NULL,
    INDEX order_items_order_id_idx (order_id),
    CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (order_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Exactly one order per (user, product): the unique key is the guard,
-- written in the same transaction as the order.
CREATE TABLE idempotency_records (
    id            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id       BIGINT        NOT NULL,
    product_id    BIGINT        NOT NULL,
    order_id      BINARY(16)    NOT NULL,
    created_at    DATETIME(6)   NOT NULL,
    CONSTRAINT idempotency_records_user_product_key UNIQUE (user_id, product_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE order_failures (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_data   MEDIUMTEXT   NOT NULL,
    -- SHA-256 of the raw message: a redelivered message is recorded once.
    message_digest CHAR(64)     NOT NULL,
    error_message  TEXT         NOT NULL,
    retry_count    INT          NOT NULL DEFAULT 0,
    status         VARCHAR(16)  NOT NULL,
    retryable      BOOLEAN      NOT NULL,
    source         VARCHAR(16)  NOT NULL,
    next_retry_at  DATETIME(6)  NOT NULL,
    locked_until   DATETIME(6)  NULL,
    -- Written with a claim; only its holder may resolve the claim.
    lease_token    BINARY(16)   NULL,
    order_id       BINARY(16)   NULL,
    created_at     DATETIME(6)  NOT NULL,
    updated_at     DATETIME(6)  NOT NULL,
    CONSTRAINT order_failures_message_digest_key UNIQUE (message_digest),
    CONSTRAINT order_failures_status_check CHECK (status IN ('pending', 'processing', 'success', 'failed')),
    CONSTRAINT order_failures_source_check CHECK (source IN ('rabbitmq', 'kafka', 'api', 'compensator')),
    INDEX order_failures_status_due_idx (status, next_retry_at),
    INDEX order_failures_status_updated_idx (status, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
