-- A failure keeps the message's bytes exactly as received, whatever they are
-- (NUL, invalid UTF-8), up to a configured cap, and the length of the whole
-- message. Rows recorded before keep their text, as UTF-8 bytes.
ALTER TABLE order_failures
    ALTER COLUMN message_data TYPE BYTEA USING convert_to(message_data, 'UTF8'),
    ADD COLUMN message_size BIGINT;
UPDATE order_failures SET message_size = octet_length(message_data);
ALTER TABLE order_failures ALTER COLUMN message_size SET NOT NULL;
