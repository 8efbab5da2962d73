-- The retry history of each failure: one row per retry that ended (an order
-- created, rescheduled with its reason, or given up with its reason),
-- written in the transaction that ends the retry's claim. Deleted with its
-- failure.
CREATE TABLE order_failure_attempts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    failure_id    BIGINT        NOT NULL REFERENCES order_failures (id) ON DELETE CASCADE,
    attempted_at  TIMESTAMPTZ   NOT NULL,
    outcome       VARCHAR(16)   NOT NULL CHECK (outcome IN ('created', 'rescheduled', 'given_up')),
    reason        TEXT,
    order_id      UUID
);
CREATE INDEX order_failure_attempts_failure_idx ON order_failure_attempts (failure_id, id);

-- The console filters failures by the day they were recorded.
CREATE INDEX order_failures_created_idx ON order_failures (created_at);

-- Each failure's reason group: the reason without what varies from message
-- to message (order_core::domain::REASON_DETAILS, the same expression), its
-- first 200 characters. The console groups and filters by it.
ALTER TABLE order_failures ADD COLUMN reason_group VARCHAR(200)
    GENERATED ALWAYS AS (left(regexp_replace(error_message,
        ' \(got .*\)$| at line [0-9]+ column [0-9]+|: ".*"$', '', 'g'), 200)) STORED;
CREATE INDEX order_failures_reason_group_idx ON order_failures (reason_group);

-- The console's text search (`q`) is a substring match, which trigram
-- indexes serve: on the reason, and on the message body as ASCII text, in
-- exactly the expression of the search (order-core's PG_BODY_AS_ASCII,
-- lowered). pg_trgm is a trusted extension: the database's owner may
-- create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX order_failures_reason_trgm_idx ON order_failures
    USING gin (error_message gin_trgm_ops);
CREATE INDEX order_failures_body_trgm_idx ON order_failures
    USING gin (lower(replace(regexp_replace(replace(encode(message_data, 'escape'), '\\', U&'\E000'),
        '\\[0-7]{3}', U&'\FFFD', 'g'), U&'\E000', '\')) gin_trgm_ops);
