-- A failure keeps the message's bytes exactly as received, whatever they are
-- (NUL, invalid UTF-8), up to a configured cap, and the length of the whole
-- message. Rows recorded before keep their text, as UTF-8 bytes; those the
-- earlier code cut (ending in "…[truncated, N bytes in all]") keep the text
-- before that mark, and N as their length.
ALTER TABLE order_failures ADD COLUMN message_size BIGINT;
UPDATE order_failures
   SET message_size = substring(message_data from '…\[truncated, ([0-9]+) bytes in all\]$')::bigint,
       message_data = regexp_replace(message_data, '…\[truncated, [0-9]+ bytes in all\]$', '')
 WHERE message_data ~ '…\[truncated, [0-9]+ bytes in all\]$';
ALTER TABLE order_failures
    ALTER COLUMN message_data TYPE BYTEA USING convert_to(message_data, 'UTF8');
UPDATE order_failures SET message_size = octet_length(message_data) WHERE message_size IS NULL;
ALTER TABLE order_failures ALTER COLUMN message_size SET NOT NULL;
