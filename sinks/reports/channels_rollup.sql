-- Channel report from the roll-ups (channel_visitors and visitor_days, credits_daily): same columns as channels.sql.
-- Visitors are exact (the same roll-ups read as channels.sql). Credited counts and revenue are exact only
-- while every credit row was delivered once and no conversion was re-attributed (a new version): a materialized
-- view adds every inserted block, replays and superseded versions included. Use channels.sql when it must be
-- exact.
WITH
    credited AS
    (
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign,
               sumMergeIf(credit, stage = 'lead') AS leads,
               sumMergeIf(credit, stage = 'mql') AS mqls,
               sumMergeIf(credit, stage = 'sql') AS sqls,
               sumMergeIf(credit, stage = 'customer') AS customers,
               sumMergeIf(credit, stage IN ('lost', 'disqualified')) AS lost,
               sumMergeIf(revenue, stage = 'customer') AS revenue
        FROM credits_daily
        WHERE model = {model:String} AND day BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel, campaign
    ),
    visits AS
    (
        -- Distinct visitors, exact under replays (parameterized view, migrations/0009_channel_visitors.sql).
        SELECT channel, campaign, visitors
        FROM channel_visitor_counts(from = {from:Date}, to = {to:Date}, by_campaign = {by_campaign:UInt8})
    ),
    money AS
    (
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign, sum(cost) AS spend
        FROM spend FINAL
        WHERE date BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel, campaign
    )
SELECT
    channel,
    campaign,
    sum(visitors) AS visitors,
    sum(leads_) AS leads,
    sum(mqls_) AS mqls,
    sum(sqls_) AS sqls,
    sum(customers_) AS customers,
    sum(lost_) AS lost,
    sum(revenue_) AS revenue,
    sum(spend_) AS spend,
    if(leads = 0, NULL, round(toFloat64(spend) / toFloat64(leads), 4)) AS cost_per_lead,
    if(customers = 0, NULL, round(toFloat64(spend) / toFloat64(customers), 4)) AS cac,
    if(spend = 0, NULL, round(toFloat64(revenue) / toFloat64(spend), 4)) AS roas,
    if(leads = 0, NULL, round(toFloat64(customers) / toFloat64(leads), 4)) AS lead_to_customer,
    if(leads = 0, NULL, round(toFloat64(lost) / toFloat64(leads), 4)) AS lost_share
FROM
(
    -- Each source is read once; the outer GROUP BY lines them up by channel and campaign.
    SELECT channel, campaign, toUInt64(0) AS visitors, toDecimal128(leads, 9) AS leads_, toDecimal128(mqls, 9) AS mqls_,
           toDecimal128(sqls, 9) AS sqls_, toDecimal128(customers, 9) AS customers_, toDecimal128(lost, 9) AS lost_,
           toDecimal128(revenue, 2) AS revenue_, toDecimal128(0, 2) AS spend_
    FROM credited
    UNION ALL
    SELECT channel, campaign, toUInt64(visitors), toDecimal128(0, 9), toDecimal128(0, 9), toDecimal128(0, 9),
           toDecimal128(0, 9), toDecimal128(0, 9), toDecimal128(0, 2), toDecimal128(0, 2)
    FROM visits
    UNION ALL
    SELECT channel, campaign, toUInt64(0), toDecimal128(0, 9), toDecimal128(0, 9), toDecimal128(0, 9),
           toDecimal128(0, 9), toDecimal128(0, 9), toDecimal128(0, 2), toDecimal128(spend, 2)
    FROM money
)
GROUP BY channel, campaign
ORDER BY revenue DESC, leads DESC, visitors DESC, channel, campaign
