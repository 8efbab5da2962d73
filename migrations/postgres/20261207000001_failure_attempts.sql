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
