-- Visitors per channel as roaring bitmaps of visitor numbers: exact distinct counts whose cost does not grow with
-- unmerged parts (docs/CLICKHOUSE.md, "Why the channel report is fast and exact").
--
-- touches.visitor_number: the stream worker numbers each visitor when it first sees it, from this version on:
-- (events partition << 40) + offset of the visitor's first event + 1 (stream_jobs/visitors.py, visitor_number).
-- Unique, fixed for the visitor's life, the same after a replay, and dense where the events are. Touches stored
-- before have 0, and so do all later touches of a visitor first seen before (its state has no number, for life).
--
-- channel_visitors: for each grouping (as in visitor_days: 'channel' with campaign = '', or 'campaign'), period
-- ('day', and 'month' starting on its first day) and channel (and campaign), the bitmap of the numbered visitors
-- with a touch in it. The visitors of a date range are the cardinality of the union (groupBitmapMerge) of its whole
-- months and its remaining days. A union is idempotent: a replayed touch changes nothing, unmerged parts give the
-- same count, and reading costs about the size of the answer, not the number of parts.
--
-- visitor_days (migration 0007) keeps only the touches with visitor_number 0 from now on. A visitor is in one of
-- the two roll-ups, never both (its number is fixed), so their counts add up, exactly.
--
-- channel_visitor_counts: a parameterized view with that count, which the channel reports read, also by hand:
--   SELECT * FROM channel_visitor_counts(from = '2024-03-01', to = '2024-03-31', by_campaign = 0)
--
-- Back-fill: nothing to do: every touch stored before this migration has visitor_number 0 and is in
-- visitor_days already. Migrate while the sink is stopped (a touch inserted between dropping and re-creating
-- visitor_days_mv would be missed). To rebuild channel_visitors: TRUNCATE it and run its view's SELECT as
-- INSERT INTO channel_visitors SELECT ... (the down step does the same for visitor_days).

-- migrate:up
ALTER TABLE touches
    ADD COLUMN IF NOT EXISTS visitor_number UInt64 DEFAULT 0
        COMMENT 'Visitor number for bitmaps: (partition << 40) + offset of its first event + 1; 0 before numbers'
    AFTER visitor_id;

CREATE TABLE IF NOT EXISTS channel_visitors
(
    grouping LowCardinality(String)                 COMMENT 'channel: campaign is empty; campaign: split by campaign',
    period   LowCardinality(String)                 COMMENT 'day, or month (a calendar month)',
    starts   Date                                   COMMENT 'First day of the period (UTC)',
    channel  LowCardinality(String)                 COMMENT 'Channel of the touches',
    campaign String                                 COMMENT 'Campaign of the touches; empty when grouping = channel',
    visitors AggregateFunction(groupBitmap, UInt64) COMMENT 'Numbered visitors with a touch in it: groupBitmapMerge'
)
ENGINE = AggregatingMergeTree
ORDER BY (grouping, period, starts, channel, campaign)
SETTINGS index_granularity = 1024
COMMENT 'Bitmaps of numbered visitors per channel (and campaign), day and month; exact under replays';

CREATE MATERIALIZED VIEW IF NOT EXISTS channel_visitors_mv TO channel_visitors AS
SELECT grouping, period, starts, channel, campaign, groupBitmapState(visitor_number) AS visitors
FROM
(
    SELECT grouping, period, if(period = 'day', toDate(occurred_at), toStartOfMonth(occurred_at)) AS starts,
           channel, if(grouping = 'campaign', campaign, '') AS campaign, visitor_number
    FROM touches
    ARRAY JOIN ['channel', 'campaign'] AS grouping
    ARRAY JOIN ['day', 'month'] AS period
    WHERE visitor_number != 0
)
GROUP BY grouping, period, starts, channel, campaign;

DROP VIEW IF EXISTS visitor_days_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS visitor_days_mv TO visitor_days AS
SELECT grouping, channel, campaign, visitor_id, groupUniqArray(day) AS days
FROM
(
    SELECT grouping, channel, if(grouping = 'campaign', campaign, '') AS campaign, visitor_id,
           toDate(occurred_at) AS day
    FROM touches
    ARRAY JOIN ['channel', 'campaign'] AS grouping
    WHERE visitor_number = 0
)
GROUP BY grouping, channel, campaign, visitor_id;

CREATE VIEW IF NOT EXISTS channel_visitor_counts AS
WITH
    -- The whole calendar months inside the period: [months_from, months_to).
    if(toStartOfMonth({from:Date}) = {from:Date}, {from:Date}, toStartOfMonth({from:Date}) + INTERVAL 1 MONTH)
        AS months_from,
    toStartOfMonth({to:Date} + 1) AS months_to
-- A visitor is counted by exactly one of the two roll-ups, so their counts add up.
SELECT channel, campaign, sum(counted) AS visitors
FROM
(
    -- Numbered visitors: the union of the bitmaps of the period's whole months and of its other days.
    SELECT channel, campaign, groupBitmapMerge(visitors) AS counted
    FROM channel_visitors
    WHERE grouping = if({by_campaign:UInt8} = 1, 'campaign', 'channel')
      AND ((period = 'month' AND starts >= months_from AND starts < months_to)
           OR (period = 'day' AND starts BETWEEN {from:Date} AND {to:Date}
               AND NOT (starts >= months_from AND starts < months_to)))
    GROUP BY channel, campaign
    UNION ALL
    -- Visitors first seen before numbers: one row per visitor and channel (and campaign) after FINAL; counting
    -- rows with a day in the period counts them without a hash set of visitor ids.
    SELECT channel, campaign, countIf(arrayExists(d -> d BETWEEN {from:Date} AND {to:Date}, days))
    FROM visitor_days FINAL
    WHERE grouping = if({by_campaign:UInt8} = 1, 'campaign', 'channel')
    GROUP BY channel, campaign
)
GROUP BY channel, campaign
HAVING visitors > 0
COMMENT 'Distinct visitors per channel (and campaign: by_campaign = 1) with a touch from `from` to `to` (days, UTC)';

-- migrate:down
DROP VIEW IF EXISTS channel_visitor_counts;

-- visitor_days takes every touch again, so the numbered visitors go back into it before the bitmaps go.
DROP VIEW IF EXISTS visitor_days_mv;

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
    WHERE visitor_number != 0
)
GROUP BY grouping, channel, campaign, visitor_id;

DROP VIEW IF EXISTS channel_visitors_mv;
DROP TABLE IF EXISTS channel_visitors;
ALTER TABLE touches DROP COLUMN IF EXISTS visitor_number;
