-- An operator may resolve a failure by hand, with a note: it becomes
-- `resolved`, is never retried again, and is kept for the record (and purged
-- after compensator.failure_retention like success and failed).
ALTER TABLE order_failures ADD COLUMN resolution_note TEXT;
-- The status CHECK was written inline in the table, so PostgreSQL named it
-- order_failures_status_check; it is replaced under the same name.
ALTER TABLE order_failures
    DROP CONSTRAINT order_failures_status_check,
    ADD CONSTRAINT order_failures_status_check
        CHECK (status IN ('pending', 'processing', 'success', 'failed', 'resolved'));
