-- A failure keeps the message's bytes exactly as received, whatever they are
-- (invalid UTF-8, binary), up to a configured cap, and the length of the
-- whole message. Rows recorded before keep their text, as UTF-8 bytes.
ALTER TABLE order_failures
    MODIFY message_data MEDIUMBLOB NOT NULL,
    ADD COLUMN message_size BIGINT NULL AFTER message_data;
UPDATE order_failures SET message_size = LENGTH(message_data);
ALTER TABLE order_failures MODIFY message_size BIGINT NOT NULL;
