-- Channel report from the raw tables: exact under replays and re-attributed (re-versioned) conversions.
-- Per channel (campaign = '' unless by_campaign = 1):
--   visitors       distinct visitors with a touch on the channel in the period (plain count)
--   leads .. lost  conversions of that stage in the period, credited to the channel under {model}
--                  (sum of credit shares: the columns add up to the plain totals; with model first_touch they
--                  are the plain counts by first touch)
--   revenue        customer revenue credited under {model}
--   spend          marketing spend in the period
-- and the derived figures cost_per_lead, cac, roas, lead_to_customer, lost_share (NULL when undefined).
-- By hand: clickhouse-client --param_model=linear --param_from=2024-01-01 --param_to=2024-03-31
--          --param_by_campaign=0 --queries-file sinks/reports/channels.sql
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
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign,
               sumIf(credit, stage = 'lead') AS leads,
               sumIf(credit, stage = 'mql') AS mqls,
               sumIf(credit, stage = 'sql') AS sqls,
               sumIf(credit, stage = 'customer') AS customers,
               sumIf(credit, stage IN ('lost', 'disqualified')) AS lost,
               sumIf(revenue, stage = 'customer') AS revenue
        FROM credits FINAL
        WHERE model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id, version) IN (SELECT conversion_id, version FROM latest)
        GROUP BY channel, campaign
    ),
    visits AS
    (
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign, uniqExact(visitor_id) AS visitors
        FROM touches
        WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
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
