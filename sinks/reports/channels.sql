-- Channel report, one text for both sources ({exact:UInt8}): the arithmetic below exists once.
--   exact = 1: credits and spend from the raw tables (FINAL, newest version): exact under replays and
--              re-attributed (re-versioned) conversions.
--   exact = 0: credits from the roll-up credits_daily (fast; a materialized view adds every inserted block, so
--              replays and superseded versions are counted too: use exact = 1 when it must be exact).
-- {model} may also be a data-driven model (markov_1, markov_2, markov_3, shapley): its credits are those
-- `closedloop attribute` computed for exactly this period (data_driven_credits), the same in both sources.
-- Visitors come from the replay-safe roll-ups channel_visitors (bitmaps of numbered visitors, migration 0009) and
-- visitor_days (visitors first seen before numbers, migration 0007) in both.
-- Per channel (campaign = '' unless by_campaign = 1):
--   visitors       distinct visitors with a touch on the channel in the period (plain count)
--   leads .. lost  conversions of that stage in the period, credited to the channel under {model}
--                  (sum of credit shares: the columns add up to the plain totals; with model first_touch they
--                  are the plain counts by first touch)
--   revenue        customer revenue credited under {model}
--   spend          marketing spend in the period
-- and the derived figures cost_per_lead, cac, roas, lead_to_customer, lost_share (NULL when undefined).
-- By hand: clickhouse-client --param_model=linear --param_from=2024-01-01 --param_to=2024-03-31
--          --param_by_campaign=0 --param_exact=1 --queries-file sinks/reports/channels.sql
WITH
    -- Conversions whose credits came in more than one version (re-attributed): only their newest version
    -- counts. Usually none or few, so the filter below stays cheap (no set over every conversion).
    reattributed AS
    (
        SELECT conversion_id, newest
        FROM credit_versions FINAL
        WHERE {exact:UInt8} = 1 AND model = {model:String} AND oldest < newest
    ),
    credited AS
    (
        -- The source not chosen has a constant false filter: ClickHouse reads nothing of it.
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign,
               sumIf(credit, stage = 'lead') AS leads,
               sumIf(credit, stage = 'mql') AS mqls,
               sumIf(credit, stage = 'sql') AS sqls,
               sumIf(credit, stage = 'customer') AS customers,
               sumIf(credit, stage IN ('lost', 'disqualified')) AS lost,
               sumIf(revenue, stage = 'customer') AS revenue
        FROM credits FINAL
        WHERE {exact:UInt8} = 1
          AND model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id NOT IN (SELECT conversion_id FROM reattributed)
               OR (conversion_id, version) IN (SELECT conversion_id, newest FROM reattributed))
        GROUP BY channel, campaign
        -- credits is partitioned by model, which is part of its key: FINAL need not merge across partitions.
        SETTINGS do_not_merge_across_partitions_select_final = 1
        UNION ALL
        SELECT channel, if({by_campaign:UInt8} = 1, campaign, '') AS campaign,
               sumMergeIf(credit, stage = 'lead') AS leads,
               sumMergeIf(credit, stage = 'mql') AS mqls,
               sumMergeIf(credit, stage = 'sql') AS sqls,
               sumMergeIf(credit, stage = 'customer') AS customers,
               sumMergeIf(credit, stage IN ('lost', 'disqualified')) AS lost,
               sumMergeIf(revenue, stage = 'customer') AS revenue
        FROM credits_daily
        WHERE {exact:UInt8} = 0 AND model = {model:String} AND day BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel, campaign
        UNION ALL
        -- Data-driven models (markov_1-3, shapley): the newest `closedloop attribute` run of each stage for exactly
        -- this period; a stage not computed shows 0. Per channel only (no campaign split).
        SELECT channel, '' AS campaign,
               sumIf(conversions, stage = 'lead') AS leads,
               sumIf(conversions, stage = 'mql') AS mqls,
               sumIf(conversions, stage = 'sql') AS sqls,
               sumIf(conversions, stage = 'customer') AS customers,
               sumIf(conversions, stage IN ('lost', 'disqualified')) AS lost,
               sumIf(revenue, stage = 'customer') AS revenue
        FROM data_driven_credits FINAL
        WHERE model = {model:String} AND period_from = {from:Date} AND period_to = {to:Date}
          AND (stage, computed_at) IN (SELECT stage, max(computed_at) FROM data_driven_credits
                                       WHERE model = {model:String} AND period_from = {from:Date}
                                         AND period_to = {to:Date}
                                       GROUP BY stage)
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
    if(leads = 0, NULL, round(toFloat64(spend) / toFloat64(leads), 2)) AS cost_per_lead,
    if(customers = 0, NULL, round(toFloat64(spend) / toFloat64(customers), 2)) AS cac,
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
