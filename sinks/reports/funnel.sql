-- Funnel by channel: conversions of each stage in the period credited to the channel under {model}
-- (model first_touch = plain counts by first touch), and the stage-to-stage rates.
-- Exact: raw tables, FINAL, newest version per conversion.
WITH
    latest AS
    (
        SELECT conversion_id, max(version) AS version
        FROM credits
        WHERE model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id
    ),
    stages AS
    (
        SELECT channel,
               sumIf(credit, stage = 'lead') AS leads,
               sumIf(credit, stage = 'mql') AS mqls,
               sumIf(credit, stage = 'sql') AS sqls,
               sumIf(credit, stage = 'opportunity') AS opportunities,
               sumIf(credit, stage = 'customer') AS customers,
               sumIf(credit, stage IN ('lost', 'disqualified')) AS lost
        FROM credits FINAL
        WHERE model = {model:String} AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id, version) IN (SELECT conversion_id, version FROM latest)
        GROUP BY channel
    )
SELECT
    channel,
    toDecimal128(leads, 9) AS leads,
    toDecimal128(mqls, 9) AS mqls,
    toDecimal128(sqls, 9) AS sqls,
    toDecimal128(opportunities, 9) AS opportunities,
    toDecimal128(customers, 9) AS customers,
    toDecimal128(lost, 9) AS lost,
    if(leads = 0, NULL, round(toFloat64(mqls) / toFloat64(leads), 4)) AS lead_to_mql,
    if(mqls = 0, NULL, round(toFloat64(sqls) / toFloat64(mqls), 4)) AS mql_to_sql,
    if(sqls = 0, NULL, round(toFloat64(opportunities) / toFloat64(sqls), 4)) AS sql_to_opportunity,
    if(opportunities = 0, NULL, round(toFloat64(customers) / toFloat64(opportunities), 4)) AS opportunity_to_customer,
    if(leads = 0, NULL, round(toFloat64(customers) / toFloat64(leads), 4)) AS lead_to_customer
FROM stages
ORDER BY leads DESC, channel
