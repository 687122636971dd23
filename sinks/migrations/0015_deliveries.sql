-- Outbound deliveries (docs/DELIVERY.md): how each (outbox message, destination) ended, written by the sink from
-- the deliveries topic that `closedloop deliver` fills. One row per delivery key; a replayed status collapses
-- (ReplacingMergeTree on finished_at: the newest wins). No email: the lead id names the person, as in every
-- analytics table.
--   SELECT destination, status, count() FROM deliveries FINAL GROUP BY ALL

-- migrate:up
CREATE TABLE IF NOT EXISTS deliveries
(
    delivery_key String                   COMMENT 'Idempotency key of the delivery: one per message and destination',
    message_id   String                   COMMENT 'Outbox message delivered, e.g. sales_ready:<lead id>',
    kind         LowCardinality(String)   COMMENT 'Kind of the message, e.g. sales_ready',
    lead_id      String                   COMMENT 'Lead the message is about',
    destination  LowCardinality(String)   COMMENT 'webhook, slack, hubspot or pipedrive',
    status       LowCardinality(String)   COMMENT 'delivered, or dead (gave up: see reason and the outbox-dead topic)',
    tries        UInt16                   COMMENT 'HTTP requests made, retries included',
    http_status  Nullable(UInt16)         COMMENT 'Status of the last answer; NULL when the last try got none',
    reason       String                   COMMENT 'Why it is dead; empty when delivered',
    finished_at  DateTime64(3, 'UTC')     COMMENT 'When it was delivered or given up (UTC)'
)
ENGINE = ReplacingMergeTree(finished_at)
ORDER BY delivery_key
COMMENT 'How each outbound delivery ended; one row per delivery key after FINAL';

-- migrate:down
DROP TABLE IF EXISTS deliveries;
