-- Two views over the tables above, so that every report reading whole journeys or customer cohorts reads them the
-- same way (docs/ATTRIBUTION.md, "Journeys of a period"; docs/CLICKHOUSE.md, "Cohorts and payback").
--
-- journeys(stage, from, to, lookback_days): every journey of a period, one row each, converting and not:
--   converting:  a lead whose first {stage} conversion falls in the period: its touches from all its visitors in
--                [converted_at - lookback_days, converted_at] (the rule-based models' window)
--   lead, not:   a lead with a touch in the period and no {stage} conversion up to the period's end: its touches
--                in the period
--   anonymous:   a visitor never linked to a lead, with a touch in the period: its touches in the period
-- `steps` holds the touches in time order (then touch id) as (occurred_at, touch_id, channel, landing_path).
-- A converting lead without a touch in its window has no steps.
--   SELECT converted, arrayMap(s -> s.3, steps) AS channels
--   FROM journeys(stage = 'customer', from = '2024-03-01', to = '2024-03-31', lookback_days = 90)
--
-- customer_cohorts: one row per customer (the newest version of each customer conversion), in the cohort of the
-- month and channel of its first touch (its first_touch credit: the first touch within the lookback window).
-- A customer without any touch has no first touch and no cohort, and is not in the view.

-- migrate:up
CREATE VIEW IF NOT EXISTS journeys AS
WITH
    lead_touches AS
    (
        SELECT DISTINCT l.lead_id AS lead_id, t.touch_id AS touch_id, t.occurred_at AS occurred_at,
               toString(t.channel) AS channel, t.landing_path AS landing_path
        FROM touches AS t FINAL
        INNER JOIN (SELECT DISTINCT visitor_id, lead_id FROM identity_links FINAL) AS l ON t.visitor_id = l.visitor_id
    ),
    reached AS
    (
        SELECT lead_id, min(occurred_at) AS converted_at,
               toDecimal128(ifNull(argMin(revenue, occurred_at), 0), 2) AS revenue
        FROM conversions FINAL
        WHERE stage = {stage:String} AND toDate(occurred_at) <= {to:Date}
        GROUP BY lead_id
    )
SELECT
    c.lead_id AS journey_id,
    toUInt8(1) AS converted,
    any(c.converted_at) AS converted_at,
    any(c.revenue) AS revenue,
    arraySort(groupArrayIf((lt.occurred_at, lt.touch_id, lt.channel, lt.landing_path),
        lt.occurred_at <= c.converted_at
        AND lt.occurred_at >= c.converted_at - toIntervalDay({lookback_days:UInt32}))) AS steps
FROM reached AS c
LEFT JOIN lead_touches AS lt ON lt.lead_id = c.lead_id
WHERE toDate(c.converted_at) >= {from:Date}
GROUP BY c.lead_id
UNION ALL
SELECT lead_id, toUInt8(0), NULL, toDecimal128(0, 2), arraySort(groupArray((occurred_at, touch_id, channel, landing_path)))
FROM lead_touches
WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date} AND lead_id NOT IN (SELECT lead_id FROM reached)
GROUP BY lead_id
UNION ALL
SELECT visitor_id, toUInt8(0), NULL, toDecimal128(0, 2),
       arraySort(groupArray((occurred_at, touch_id, toString(channel), landing_path)))
FROM touches FINAL
WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
  AND visitor_id NOT IN (SELECT visitor_id FROM identity_links)
GROUP BY visitor_id
COMMENT 'Journeys of a period for a stage, converting and not (touches in time order as steps)';

CREATE VIEW IF NOT EXISTS customer_cohorts AS
WITH
    newest AS
    (
        SELECT conversion_id, max(version) AS version
        FROM credits
        WHERE model = 'first_touch' AND stage = 'customer'
        GROUP BY conversion_id
    )
SELECT
    lead_id,
    conversion_id,
    toStartOfMonth(assumeNotNull(touch_at)) AS cohort_month,
    toString(channel) AS channel,
    campaign,
    assumeNotNull(touch_at) AS first_touch_at,
    converted_at AS customer_at,
    toUInt32(dateDiff('month', cohort_month, toStartOfMonth(converted_at))) AS months_since,
    revenue,
    currency
FROM credits FINAL
WHERE model = 'first_touch' AND stage = 'customer' AND credit > 0 AND touch_at IS NOT NULL
  AND (conversion_id, version) IN (SELECT conversion_id, version FROM newest)
COMMENT 'Customers in the cohort (month, channel) of their first touch, with their revenue and the months since';

-- migrate:down
DROP VIEW IF EXISTS customer_cohorts;
DROP VIEW IF EXISTS journeys;
