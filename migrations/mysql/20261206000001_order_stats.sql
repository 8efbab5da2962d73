-- Statistics rollups: the orders created in each UTC day and hour, by
-- status, and their amount. Every transaction that creates orders, changes
-- an order's status or expires orders adds to them in the same transaction
-- (an order counts on the day and hour it was created, in the status it has
-- now), so they always equal a full count of the orders table. Each
-- (bucket, status) has up to 8 rows (`slot`): a transaction adds to one, at
-- random, so the writers of a busy hour seldom wait for one row's lock; a
-- read sums them, and the compensator folds a closed day's slots into slot
-- 0. `order-api stats rebuild` recomputes them from the orders table.
CREATE TABLE order_stats_daily (
    day          DATE          NOT NULL,
    status       VARCHAR(16)   NOT NULL,
    slot         SMALLINT      NOT NULL,
    order_count  BIGINT        NOT NULL,
    amount       DECIMAL(24,2) NOT NULL,
    PRIMARY KEY (day, status, slot)
);
CREATE TABLE order_stats_hourly (
    hour         DATETIME(6)   NOT NULL,
    status       VARCHAR(16)   NOT NULL,
    slot         SMALLINT      NOT NULL,
    order_count  BIGINT        NOT NULL,
    amount       DECIMAL(24,2) NOT NULL,
    PRIMARY KEY (hour, status, slot)
);
-- The orders already there. A writer of a version without rollups that is
-- still running (a rolling upgrade) adds nothing: run `order-api stats
-- rebuild` once they are gone.
INSERT INTO order_stats_hourly (hour, status, slot, order_count, amount)
SELECT DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00'), status, 0, COUNT(*), SUM(total_amount)
  FROM orders GROUP BY DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00'), status;
INSERT INTO order_stats_daily (day, status, slot, order_count, amount)
SELECT DATE(hour), status, 0, SUM(order_count), SUM(amount)
  FROM order_stats_hourly GROUP BY DATE(hour), status;
