-- Overview of a period, or of each day in it ({daily:UInt8} = 1: the dashboard's trend): plain counts, no model
-- (every rule-based model's credits of a conversion add up to 1, so these are the totals of the channel report).
--   leads, customers   conversions of the stage in the period (newest version of each; FINAL)
--   revenue            customer revenue
--   spend              marketing spend
--   roas, cac          revenue / spend and spend / customers (NULL when undefined), as in channels.sql
-- first_day .. last_day is the row's span: the period, or one day (every day of the period has a row).
-- By hand: clickhouse-client --param_from=2024-01-01 --param_to=2024-03-31 --param_daily=0
--          --queries-file sinks/reports/overview.sql
WITH
    days AS
    (
        SELECT DISTINCT if({daily:UInt8} = 1, addDays({from:Date}, number), {from:Date}) AS day
        FROM numbers(toUInt64(greatest(dateDiff('day', {from:Date}, {to:Date}) + 1, 0)))
    ),
    milestones AS
    (
        SELECT if({daily:UInt8} = 1, toDate(occurred_at), {from:Date}) AS day,
               countIf(stage = 'lead') AS leads,
               countIf(stage = 'customer') AS customers,
               sumIf(ifNull(revenue, toDecimal64(0, 2)), stage = 'customer') AS revenue
        FROM conversions FINAL
        WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY day
    ),
    money AS
    (
        SELECT if({daily:UInt8} = 1, date, {from:Date}) AS day, sum(cost) AS spend
        FROM spend FINAL
        WHERE date BETWEEN {from:Date} AND {to:Date}
        GROUP BY day
    )
SELECT
    days.day AS first_day,
    if({daily:UInt8} = 1, days.day, {to:Date}) AS last_day,
    toUInt64(milestones.leads) AS leads,
    toUInt64(milestones.customers) AS customers,
    toDecimal128(milestones.revenue, 2) AS revenue,
    toDecimal128(money.spend, 2) AS spend,
    if(spend = 0, NULL, round(toFloat64(revenue) / toFloat64(spend), 4)) AS roas,
    if(customers = 0, NULL, round(toFloat64(spend) / toFloat64(customers), 2)) AS cac
FROM days
LEFT JOIN milestones ON milestones.day = days.day
LEFT JOIN money ON money.day = days.day
ORDER BY first_day
