-- Landing pages: the sessions that start on each page (touches: a touch is a session start), and the leads,
-- customers and revenue they led to, credited under {model} (sums of credit shares over the touches that landed
-- on the page, so the columns add up to the channel report's), per channel ({by_channel:UInt8} = 1) or over all.
--   sessions             touches in the period that landed on the page
--   leads .. revenue     conversions of the period credited to those pages' touches (newest version)
--   lead_rate            leads per session; customer_rate customers per session; revenue_per_session
-- Sessions count by the touch's time, conversions by the conversion's time, as in the channel report: a rate is
-- of the period's sessions and the period's conversions. Conversions without any touch are under '(none)'.
WITH
    latest AS
    (
        SELECT conversion_id, max(version) AS version
        FROM credits
        WHERE model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id
    ),
    credited AS
    (
        SELECT touch_id, toString(channel) AS channel,
               sumIf(credit, stage = 'lead') AS leads,
               sumIf(credit, stage = 'customer') AS customers,
               sumIf(revenue, stage = 'customer') AS revenue
        FROM credits FINAL
        WHERE model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id, version) IN (SELECT conversion_id, version FROM latest)
        GROUP BY touch_id, channel
        SETTINGS do_not_merge_across_partitions_select_final = 1
    ),
    landed AS
    (
        SELECT touch_id, landing_path, toString(channel) AS channel, toDate(occurred_at) AS day
        FROM touches FINAL
        WHERE touch_id IN (SELECT touch_id FROM credited)
           OR toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
    ),
    pages AS
    (
        SELECT if(c.touch_id = '(none)', '(none)', l.landing_path) AS landing_page,
               if({by_channel:UInt8} = 1, c.channel, '') AS channel, toUInt64(0) AS sessions,
               toDecimal128(c.leads, 9) AS leads, toDecimal128(c.customers, 9) AS customers,
               toDecimal128(c.revenue, 2) AS revenue
        FROM credited AS c
        LEFT JOIN landed AS l ON l.touch_id = c.touch_id
        UNION ALL
        SELECT landing_path, if({by_channel:UInt8} = 1, channel, ''), toUInt64(1), toDecimal128(0, 9),
               toDecimal128(0, 9), toDecimal128(0, 2)
        FROM landed
        WHERE day BETWEEN {from:Date} AND {to:Date}
    )
SELECT
    landing_page,
    channel,
    sum(sessions) AS sessions,
    sum(leads) AS leads,
    sum(customers) AS customers,
    toDecimal128(sum(revenue), 2) AS revenue,
    if(sessions = 0, NULL, round(toFloat64(leads) / sessions, 4)) AS lead_rate,
    if(sessions = 0, NULL, round(toFloat64(customers) / sessions, 4)) AS customer_rate,
    if(sessions = 0, NULL, round(toFloat64(revenue) / sessions, 2)) AS revenue_per_session
FROM pages
GROUP BY landing_page, channel
ORDER BY revenue DESC, leads DESC, sessions DESC, landing_page, channel
LIMIT {limit:UInt32}
