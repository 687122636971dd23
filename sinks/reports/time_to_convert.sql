-- Median days from the first touch to the lead, and from the lead to the customer, by first-touch channel.
-- The first touch of a lead is the touch the first_touch model credited for its lead conversion.
WITH
    lead_credits AS
    (
        SELECT lead_id, argMax(channel, version) AS channel, argMax(touch_at, version) AS first_touch_at,
               any(converted_at) AS lead_at
        FROM credits FINAL
        WHERE model = 'first_touch' AND stage = 'lead'
        GROUP BY lead_id
    ),
    customers AS
    (
        SELECT lead_id, min(occurred_at) AS customer_at
        FROM conversions FINAL
        WHERE stage = 'customer'
        GROUP BY lead_id
    )
SELECT
    l.channel AS channel,
    countIf(toDate(l.lead_at) BETWEEN {from:Date} AND {to:Date}) AS leads,
    round(quantileExactInclusiveIf(0.5)((toUnixTimestamp64Milli(l.lead_at) - toUnixTimestamp64Milli(l.first_touch_at)) / 86400000,
          l.first_touch_at IS NOT NULL AND toDate(l.lead_at) BETWEEN {from:Date} AND {to:Date}), 2)
        AS median_days_touch_to_lead,
    countIf(c.lead_id != '' AND toDate(c.customer_at) BETWEEN {from:Date} AND {to:Date}) AS customers,
    round(quantileExactInclusiveIf(0.5)((toUnixTimestamp64Milli(c.customer_at) - toUnixTimestamp64Milli(l.lead_at)) / 86400000,
          c.lead_id != '' AND toDate(c.customer_at) BETWEEN {from:Date} AND {to:Date}), 2)
        AS median_days_lead_to_customer
FROM lead_credits AS l
LEFT JOIN customers AS c ON c.lead_id = l.lead_id
GROUP BY channel
HAVING leads > 0 OR customers > 0
ORDER BY leads DESC, channel
SETTINGS join_use_nulls = 0
