-- Cohort CAC and payback: per month of first touch (the cohort) and channel, that month's spend on the channel
-- against the revenue of the customers first touched there then (the customer_cohorts view, migration 0013),
-- accumulated by months since the cohort month: the month in which each cohort's revenue covers its spend.
--   spend            spend on the channel in the cohort month (all campaigns)
--   customers        customers whose first touch was on the channel in that month (whenever they bought)
--   cac              spend / customers (NULL without customers)
--   revenue_m0 .. m12 revenue of those customers who bought within that many months after the cohort month
--                    (m0: the cohort month itself), cumulative; revenue_to_date: all of it so far
--   roas_to_date     revenue_to_date / spend
--   payback_months   the first month since the cohort month in which the cumulative revenue reached the spend
--                    (0: the cohort month itself); NULL when it has not (yet), or when there was no spend
-- Cohorts are the months from the month of {from} to the month of {to}. Revenue is summed in each conversion's
-- own currency: one currency per account is assumed, as in the channel report.
WITH
    toStartOfMonth({from:Date}) AS first_cohort,
    toStartOfMonth({to:Date}) AS last_cohort,
    money AS
    (
        SELECT toStartOfMonth(date) AS cohort_month, toString(channel) AS channel, sum(cost) AS spend
        FROM spend FINAL
        WHERE toStartOfMonth(date) BETWEEN first_cohort AND last_cohort
        GROUP BY cohort_month, channel
    ),
    bought AS
    (
        SELECT cohort_month, channel, count() AS customers, groupArray((months_since, revenue)) AS sales
        FROM customer_cohorts
        WHERE cohort_month BETWEEN first_cohort AND last_cohort
        GROUP BY cohort_month, channel
    ),
    cohorts AS
    (
        SELECT cohort_month, channel, toDecimal128(sum(spend), 2) AS spend, sum(customers) AS customers,
               arrayFlatten(groupArray(sales)) AS sales
        FROM
        (
            SELECT cohort_month, channel, spend, toUInt64(0) AS customers,
                   CAST([], 'Array(Tuple(UInt32, Decimal(18, 2)))') AS sales
            FROM money
            UNION ALL
            SELECT cohort_month, channel, toDecimal128(0, 2), customers, sales
            FROM bought
        )
        GROUP BY cohort_month, channel
    ),
    -- cumulative revenue after 0, 1, ..., 120 months since the cohort month (ten years bound the search)
    grown AS
    (
        SELECT *,
               arrayMap(m -> toDecimal128(arraySum(arrayMap(s -> if(s.1 <= m, s.2, toDecimal128(0, 2)), sales)), 2),
                        range(121)) AS cumulative
        FROM cohorts
    )
SELECT
    cohort_month AS cohort,
    channel,
    spend,
    customers,
    if(customers = 0, NULL, round(toFloat64(spend) / customers, 2)) AS cac,
    cumulative[1] AS revenue_m0,
    cumulative[2] AS revenue_m1,
    cumulative[3] AS revenue_m2,
    cumulative[4] AS revenue_m3,
    cumulative[7] AS revenue_m6,
    cumulative[13] AS revenue_m12,
    toDecimal128(arraySum(arrayMap(s -> s.2, sales)), 2) AS revenue_to_date,
    if(spend = 0, NULL, round(toFloat64(revenue_to_date) / toFloat64(spend), 4)) AS roas_to_date,
    if(spend = 0, NULL, toUInt32OrNull(toString(nullIf(arrayFirstIndex(r -> r >= spend, cumulative), 0) - 1)))
        AS payback_months
FROM grown
ORDER BY cohort, spend DESC, customers DESC, channel
