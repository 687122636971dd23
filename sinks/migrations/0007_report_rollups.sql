-- Two replay-safe roll-ups that make the exact channel report fast (docs/CLICKHOUSE.md, "Why the channel report
-- is fast and exact").
--
-- visitor_days: one row per (grouping, channel, campaign, visitor) after merges, with the set of days the visitor
-- touched it. grouping 'channel' keeps campaign = '' (visitors per channel); grouping 'campaign' keeps the
-- campaign (visitors per channel and campaign). Distinct visitors in a period are then a plain count of rows with
-- a day in the period, read with FINAL (a sorted merge of parts, no hash set of visitor ids). A replayed touch adds
-- a day already in the set, so it changes nothing: exact under replays.
--
-- credit_versions: the oldest and newest credit version per (model, conversion). A conversion whose oldest and
-- newest differ was re-attributed; the report keeps only its newest version's credits. min/max do not change
-- when a row arrives twice: exact under replays.
--
-- Back-fill: the INSERT ... SELECT statements below fill both from the rows already present (run while the sink
-- is stopped: rows inserted between the view and the back-fill are seen twice, which is harmless here since both
-- roll-ups are idempotent). To rebuild: TRUNCATE the roll-up and run the same INSERT ... SELECT.

-- migrate:up
CREATE TABLE IF NOT EXISTS visitor_days
(
    grouping   LowCardinality(String)                                   COMMENT 'channel: campaign is empty; campaign: split by campaign',
    channel    LowCardinality(String)                                   COMMENT 'Channel of the touches',
    campaign   String                                                   COMMENT 'Campaign of the touches; empty when grouping = channel',
    visitor_id String                                                   COMMENT 'Visitor with a touch on the channel (and campaign)',
    days       SimpleAggregateFunction(groupUniqArrayArray, Array(Date)) COMMENT 'Distinct days (UTC) of those touches'
)
ENGINE = AggregatingMergeTree
ORDER BY (grouping, channel, campaign, visitor_id)
COMMENT 'Visitors per channel (and campaign) with their touch days; read with FINAL; exact under replays';

CREATE MATERIALIZED VIEW IF NOT EXISTS visitor_days_mv TO visitor_days AS
SELECT grouping, channel, campaign, visitor_id, groupUniqArray(day) AS days
FROM
(
    SELECT grouping, channel, if(grouping = 'campaign', campaign, '') AS campaign, visitor_id,
           toDate(occurred_at) AS day
    FROM touches
    ARRAY JOIN ['channel', 'campaign'] AS grouping
)
GROUP BY grouping, channel, campaign, visitor_id;

INSERT INTO visitor_days
SELECT grouping, channel, campaign, visitor_id, groupUniqArray(day) AS days
FROM
(
    SELECT grouping, channel, if(grouping = 'campaign', campaign, '') AS campaign, visitor_id,
           toDate(occurred_at) AS day
    FROM touches
    ARRAY JOIN ['channel', 'campaign'] AS grouping
)
GROUP BY grouping, channel, campaign, visitor_id;

CREATE TABLE IF NOT EXISTS credit_versions
(
    model         LowCardinality(String)            COMMENT 'Attribution model',
    conversion_id String                            COMMENT 'Conversion credited',
    oldest        SimpleAggregateFunction(min, UInt32) COMMENT 'Oldest credit version seen',
    newest        SimpleAggregateFunction(max, UInt32) COMMENT 'Newest credit version seen: the only one reports count'
)
ENGINE = AggregatingMergeTree
PARTITION BY model
ORDER BY (model, conversion_id)
COMMENT 'Credit versions per model and conversion; oldest < newest marks a re-attributed conversion';

CREATE MATERIALIZED VIEW IF NOT EXISTS credit_versions_mv TO credit_versions AS
SELECT model, conversion_id, min(version) AS oldest, max(version) AS newest
FROM credits
GROUP BY model, conversion_id;

INSERT INTO credit_versions
SELECT model, conversion_id, min(version) AS oldest, max(version) AS newest
FROM credits
GROUP BY model, conversion_id;

-- migrate:down
DROP VIEW IF EXISTS credit_versions_mv;
DROP TABLE IF EXISTS credit_versions;
DROP VIEW IF EXISTS visitor_days_mv;
DROP TABLE IF EXISTS visitor_days;
