-- Every change of an order increments its version: the order cache refuses
-- to store a copy older than one it has been told about, and a status change
-- is conditional on the version it read.
ALTER TABLE orders ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
