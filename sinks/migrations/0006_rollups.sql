-- Roll-ups for channel aggregation, fed by materialized views (-State on write, -Merge on read).
--
-- touches_daily is exact under replays: it keeps uniqExact states of visitor and touch ids, and a duplicate id
-- does not change a distinct count.
-- credits_daily keeps sums. A materialized view sees each inserted block, not the deduplicated table, so a
-- replayed credit, or an older version of a re-attributed conversion, is added again: its sums are exact only
-- while every credit row arrived once in a single version. `closedloop report channels` therefore reads the
-- raw tables (FINAL, newest version) by default, and uses credits_daily only with `--source rollup`
-- (tests/test_reports.py proves both behaviours).
--
-- Back-fill: a materialized view only sees rows inserted after it exists. The INSERT ... SELECT statements
-- below back-fill the roll-ups from the rows already present; to rebuild a roll-up later, TRUNCATE it and
-- run the same INSERT ... SELECT while the sink is stopped.

-- migrate:up
CREATE TABLE IF NOT EXISTS touches_daily
(
    day        Date                                     COMMENT 'Day of the touch (UTC)',
    channel    LowCardinality(String)                   COMMENT 'Channel of the touches',
    source     String                                   COMMENT 'Source of the touches',
    medium     LowCardinality(String)                   COMMENT 'Medium of the touches',
    campaign   String                                   COMMENT 'Campaign of the touches',
    visitors   AggregateFunction(uniqExact, String)     COMMENT 'Distinct visitor ids: read with uniqExactMerge',
    touches    AggregateFunction(uniqExact, String)     COMMENT 'Distinct touch ids: read with uniqExactMerge'
)
ENGINE = AggregatingMergeTree
ORDER BY (day, channel, source, medium, campaign)
COMMENT 'Roll-up of touches by day/channel/source/medium/campaign; exact under replays (distinct-count states)';

CREATE MATERIALIZED VIEW IF NOT EXISTS touches_daily_mv TO touches_daily AS
SELECT toDate(occurred_at) AS day, channel, source, medium, campaign,
       uniqExactState(visitor_id) AS visitors, uniqExactState(touch_id) AS touches
FROM touches
GROUP BY day, channel, source, medium, campaign;

INSERT INTO touches_daily
SELECT toDate(occurred_at) AS day, channel, source, medium, campaign,
       uniqExactState(visitor_id) AS visitors, uniqExactState(touch_id) AS touches
FROM touches
GROUP BY day, channel, source, medium, campaign;

CREATE TABLE IF NOT EXISTS credits_daily
(
    model       LowCardinality(String)                     COMMENT 'Attribution model',
    stage       LowCardinality(String)                     COMMENT 'Stage of the conversions',
    day         Date                                       COMMENT 'Day of the conversion (UTC)',
    channel     LowCardinality(String)                     COMMENT 'Channel credited',
    source      String                                     COMMENT 'Source credited',
    medium      LowCardinality(String)                     COMMENT 'Medium credited',
    campaign    String                                     COMMENT 'Campaign credited',
    credit      AggregateFunction(sum, Decimal(12, 9))     COMMENT 'Credited conversions: sumMerge; not replay-exact',
    revenue     AggregateFunction(sum, Decimal(18, 2))     COMMENT 'Credited revenue: sumMerge; not replay-exact',
    conversions AggregateFunction(uniqExact, String)       COMMENT 'Distinct conversions touched: uniqExactMerge; exact'
)
ENGINE = AggregatingMergeTree
ORDER BY (model, stage, day, channel, source, medium, campaign)
COMMENT 'Roll-up of credits by model/stage/day/channel/source/medium/campaign; sums count replays twice';

CREATE MATERIALIZED VIEW IF NOT EXISTS credits_daily_mv TO credits_daily AS
SELECT model, stage, toDate(converted_at) AS day, channel, source, medium, campaign,
       sumState(credit) AS credit, sumState(revenue) AS revenue, uniqExactState(conversion_id) AS conversions
FROM credits
GROUP BY model, stage, day, channel, source, medium, campaign;

INSERT INTO credits_daily
SELECT model, stage, toDate(converted_at) AS day, channel, source, medium, campaign,
       sumState(credit) AS credit, sumState(revenue) AS revenue, uniqExactState(conversion_id) AS conversions
FROM credits FINAL
GROUP BY model, stage, day, channel, source, medium, campaign;

-- migrate:down
DROP VIEW IF EXISTS credits_daily_mv;
DROP TABLE IF EXISTS credits_daily;
DROP VIEW IF EXISTS touches_daily_mv;
DROP TABLE IF EXISTS touches_daily;
