-- Every journey of a period for the data-driven models (sinks/data_driven_job.py), one row each:
-- channels in time order (then touch id), whether it converted to {stage}, and the revenue of that conversion.
--   converting:  a lead with a {stage} conversion in the period: its touches from all its visitors in
--                [converted_at - {lookback_days} days, converted_at] (the rule-based models' window)
--   lead, not:   a lead with a touch in the period and no {stage} conversion up to the period's end: its touches
--                in the period, ending in null
--   anonymous:   a visitor never linked to a lead, with a touch in the period: its touches in the period, null
-- A converting lead without a touch in its window has an empty path (the job leaves it out and counts it).
WITH
    lead_touches AS
    (
        SELECT DISTINCT l.lead_id AS lead_id, t.touch_id AS touch_id, t.occurred_at AS occurred_at,
               toString(t.channel) AS channel
        FROM touches AS t FINAL
        INNER JOIN (SELECT DISTINCT visitor_id, lead_id FROM identity_links FINAL) AS l ON t.visitor_id = l.visitor_id
    ),
    reached AS
    (
        SELECT lead_id, min(occurred_at) AS converted_at, toFloat64(ifNull(argMin(revenue, occurred_at), 0)) AS revenue
        FROM conversions FINAL
        WHERE stage = {stage:String} AND toDate(occurred_at) <= {to:Date}
        GROUP BY lead_id
    )
SELECT
    arrayMap(x -> x.3, arraySort(groupArrayIf((lt.occurred_at, lt.touch_id, lt.channel),
        lt.occurred_at <= c.converted_at
        AND lt.occurred_at >= c.converted_at - toIntervalDay({lookback_days:UInt32})))) AS channels,
    toUInt8(1) AS converted,
    any(c.revenue) AS revenue
FROM reached AS c
LEFT JOIN lead_touches AS lt ON lt.lead_id = c.lead_id
WHERE toDate(c.converted_at) >= {from:Date}
GROUP BY c.lead_id
UNION ALL
SELECT arrayMap(x -> x.3, arraySort(groupArray((occurred_at, touch_id, channel)))), toUInt8(0), toFloat64(0)
FROM lead_touches
WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date} AND lead_id NOT IN (SELECT lead_id FROM reached)
GROUP BY lead_id
UNION ALL
SELECT arrayMap(x -> x.3, arraySort(groupArray((occurred_at, touch_id, toString(channel))))), toUInt8(0),
       toFloat64(0)
FROM touches FINAL
WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
  AND visitor_id NOT IN (SELECT visitor_id FROM identity_links)
GROUP BY visitor_id
