-- A failure keeps the message's bytes exactly as received, whatever they are
-- (invalid UTF-8, binary), up to a configured cap, and the length of the
-- whole message. Rows recorded before keep their text, as UTF-8 bytes; those
-- the earlier code cut (ending in "…[truncated, N bytes in all]") keep the
-- text before that mark, and N as their length.
ALTER TABLE order_failures ADD COLUMN message_size BIGINT NULL AFTER message_data;
UPDATE order_failures
   SET message_size = CAST(REGEXP_SUBSTR(REGEXP_SUBSTR(message_data, '\\[truncated, [0-9]+ bytes in all\\]$'), '[0-9]+') AS UNSIGNED),
       message_data = REGEXP_REPLACE(message_data, '…\\[truncated, [0-9]+ bytes in all\\]$', '')
 WHERE message_data REGEXP '…\\[truncated, [0-9]+ bytes in all\\]$';
ALTER TABLE order_failures MODIFY message_data MEDIUMBLOB NOT NULL;
UPDATE order_failures SET message_size = LENGTH(message_data) WHERE message_size IS NULL;
ALTER TABLE order_failures MODIFY message_size BIGINT NOT NULL;
