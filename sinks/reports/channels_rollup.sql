-- Channel report from the roll-ups (touches_daily, credits_daily): same columns as channels.sql, fast at any size.
-- Visitors are exact (distinct-count states). Credited counts and revenue are exact only while every credit row
-- was delivered once and no conversion was re-attributed (a new version): a materialized view adds every
-- inserted block, replays and superseded versions included. Use channels.sql when it must be exact.
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
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign, uniqExactMerge(visitors) AS visitors
        FROM touches_daily
        WHERE day BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel, campaign
    ),
    money AS
    (
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign, sum(cost) AS spend
        FROM spend FINAL
        WHERE date BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel, campaign
    ),
    keys AS
    (
        SELECT channel, campaign FROM credited
        UNION DISTINCT SELECT channel, campaign FROM visits
        UNION DISTINCT SELECT channel, campaign FROM money
    )
SELECT
    k.channel AS channel,
    k.campaign AS campaign,
    v.visitors AS visitors,
    toDecimal128(c.leads, 9) AS leads,
    toDecimal128(c.mqls, 9) AS mqls,
    toDecimal128(c.sqls, 9) AS sqls,
    toDecimal128(c.customers, 9) AS customers,
    toDecimal128(c.lost, 9) AS lost,
    toDecimal128(c.revenue, 2) AS revenue,
    toDecimal128(m.spend, 2) AS spend,
    if(leads = 0, NULL, round(toFloat64(spend) / toFloat64(leads), 4)) AS cost_per_lead,
    if(customers = 0, NULL, round(toFloat64(spend) / toFloat64(customers), 4)) AS cac,
    if(spend = 0, NULL, round(toFloat64(revenue) / toFloat64(spend), 4)) AS roas,
    if(leads = 0, NULL, round(toFloat64(customers) / toFloat64(leads), 4)) AS lead_to_customer,
    if(leads = 0, NULL, round(toFloat64(lost) / toFloat64(leads), 4)) AS lost_share
FROM keys AS k
LEFT JOIN credited AS c ON c.channel = k.channel AND c.campaign = k.campaign
LEFT JOIN visits AS v ON v.channel = k.channel AND v.campaign = k.campaign
LEFT JOIN money AS m ON m.channel = k.channel AND m.campaign = k.campaign
ORDER BY revenue DESC, leads DESC, visitors DESC, channel, campaign
SETTINGS join_use_nulls = 0
