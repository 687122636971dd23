-- Time to convert by first-touch channel. Each lead and customer conversion of the period belongs to the channel
-- its first_touch credit names (the touch with share 1 in the newest version; every other touch of the journey
-- has a 0 row, and older versions keep rows under other touches), so `leads` and `customers` are exactly the
-- `report channels --model first_touch` counts.
--   median_days_touch_to_lead     lead conversions of the period: days from their first touch to the lead
--   median_days_lead_to_customer  customer conversions of the period: days from the lead's lead conversion
--                                 (whenever it was) to the customer
-- A median is NULL when no conversion has that time: no lead or customer in the period, a conversion without
-- any touch ((none)), a customer whose lead never identified (no lead conversion).
WITH
    newest AS
    (
        SELECT conversion_id, max(version) AS version
        FROM credits
        WHERE model = 'first_touch' AND stage IN ('lead', 'customer')
        GROUP BY conversion_id
    ),
    firsts AS
    (
        SELECT lead_id, stage, channel, touch_at, converted_at
        FROM credits FINAL
        WHERE model = 'first_touch' AND stage IN ('lead', 'customer') AND credit > 0
          AND (conversion_id, version) IN (SELECT conversion_id, version FROM newest)
        SETTINGS do_not_merge_across_partitions_select_final = 1
    ),
    lead_times AS
    (
        SELECT lead_id, converted_at AS lead_at FROM firsts WHERE stage = 'lead'
    ),
    conversions_of_period AS
    (
        SELECT channel, 1 AS is_lead,
               (toUnixTimestamp64Milli(converted_at) - toUnixTimestamp64Milli(touch_at)) / 86400000 AS days
        FROM firsts
        WHERE stage = 'lead' AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        UNION ALL
        SELECT c.channel, 0,
               (toUnixTimestamp64Milli(c.converted_at) - toUnixTimestamp64Milli(l.lead_at)) / 86400000
        FROM firsts AS c
        LEFT JOIN lead_times AS l ON l.lead_id = c.lead_id
        WHERE c.stage = 'customer' AND toDate(c.converted_at) BETWEEN {from:Date} AND {to:Date}
        SETTINGS join_use_nulls = 1
    )
SELECT
    channel,
    countIf(is_lead = 1) AS leads,
    round(quantileExactInclusiveIf(0.5)(days, is_lead = 1), 2) AS median_days_touch_to_lead,
    countIf(is_lead = 0) AS customers,
    round(quantileExactInclusiveIf(0.5)(days, is_lead = 0), 2) AS median_days_lead_to_customer
FROM conversions_of_period
GROUP BY channel
ORDER BY leads DESC, customers DESC, channel
