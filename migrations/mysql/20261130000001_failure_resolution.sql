-- An operator may resolve a failure by hand, with a note: it becomes
-- `resolved`, is never retried again, and is kept for the record (and purged
-- after compensator.failure_retention like success and failed). One
-- statement: MySQL and MariaDB do not roll DDL back, so the CHECK is never
-- left dropped without its replacement.
ALTER TABLE order_failures
    ADD COLUMN resolution_note TEXT NULL AFTER order_id,
    DROP CONSTRAINT order_failures_status_check,
    ADD CONSTRAINT order_failures_status_check
        CHECK (status IN ('pending', 'processing', 'success', 'failed', 'resolved'));
