-- Marketing spend per day, channel, source, medium and campaign. The newest accepted row per key wins
-- (received_at is the version), so a corrected spend row replaces the old one and a replay changes nothing.

-- migrate:up
CREATE TABLE IF NOT EXISTS spend
(
    date        Date                   COMMENT 'Day the money was spent',
    channel     LowCardinality(String) COMMENT 'Channel group, as in touches.channel',
    source      String                 COMMENT 'Source, as in touches.source; empty = whole channel',
    medium      LowCardinality(String) COMMENT 'Medium; empty = whole channel',
    campaign    String                 COMMENT 'Campaign; empty = not split by campaign',
    cost        Decimal(18, 2)         COMMENT 'Money spent',
    currency    LowCardinality(String) COMMENT 'ISO 4217 currency of cost',
    received_at DateTime64(3, 'UTC')   COMMENT 'Version: collector acceptance time; the newest row wins',
    event_id    String                 COMMENT 'Spend event that carried the row'
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (date, channel, source, medium, campaign)
COMMENT 'Marketing spend per day and channel/source/medium/campaign; newest row per key';

-- migrate:down
DROP TABLE IF EXISTS spend;
