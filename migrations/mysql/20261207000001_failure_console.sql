-- The retry history of each failure: one row per retry that ended (an order
-- created, rescheduled with its reason, or given up with its reason),
-- written in the transaction that ends the retry's claim. Deleted with its
-- failure.
CREATE TABLE order_failure_attempts (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    failure_id    BIGINT       NOT NULL,
    attempted_at  DATETIME(6)  NOT NULL,
    outcome       VARCHAR(16)  NOT NULL,
    reason        TEXT         NULL,
    order_id      BINARY(16)   NULL,
    CONSTRAINT order_failure_attempts_outcome_check CHECK (outcome IN ('created', 'rescheduled', 'given_up')),
    CONSTRAINT order_failure_attempts_failure_fk FOREIGN KEY (failure_id)
        REFERENCES order_failures (id) ON DELETE CASCADE,
    INDEX order_failure_attempts_failure_idx (failure_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The console filters failures by the day they were recorded.
CREATE INDEX order_failures_created_idx ON order_failures (created_at);

-- Each failure's reason group: the reason without what varies from message
-- to message (order_core::domain::REASON_DETAILS, the same expression, made
-- case-sensitive with (?-i) as it is elsewhere: MariaDB's REGEXP_REPLACE
-- follows the column's case-insensitive collation), its first 200
-- characters, compared as written (utf8mb4_bin). The console groups and
-- filters by it. (The text search has no index here: MariaDB has no
-- substring index.)
ALTER TABLE order_failures ADD COLUMN reason_group VARCHAR(200) COLLATE utf8mb4_bin
    AS (LEFT(REGEXP_REPLACE(error_message,
        '(?-i) \\(got .*\\)$| at line [0-9]+ column [0-9]+|: ".*"$', ''), 200)) STORED;
CREATE INDEX order_failures_reason_group_idx ON order_failures (reason_group);
