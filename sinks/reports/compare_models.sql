-- Customer revenue per channel under every attribution model, side by side (exact: FINAL, newest version per
-- conversion and model), then the data-driven models (Markov chains of orders 1-3, Shapley) as
-- `closedloop attribute --stage customer` last computed them for exactly this period (the newest run per model;
-- a model not computed for the period shows 0.00; docs/ATTRIBUTION.md, "Data-driven models").
-- Both kinds are first read as (channel, model, revenue) rows, then turned into one column per model.
-- Columns are fixed so the file can be run by hand.
WITH
    latest AS
    (
        SELECT conversion_id, model, max(version) AS version
        FROM credits
        WHERE stage = 'customer' AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id, model
    ),
    newest AS
    (
        SELECT model, max(computed_at) AS computed_at
        FROM data_driven_credits
        WHERE stage = 'customer' AND period_from = {from:Date} AND period_to = {to:Date}
        GROUP BY model
    ),
    revenue AS
    (
        SELECT toString(channel) AS channel, toString(model) AS model, toDecimal128(revenue, 2) AS revenue
        FROM credits FINAL
        WHERE stage = 'customer' AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id, model, version) IN (SELECT conversion_id, model, version FROM latest)
        UNION ALL
        SELECT toString(channel), toString(model), toDecimal128(revenue, 2)
        FROM data_driven_credits FINAL
        WHERE stage = 'customer' AND period_from = {from:Date} AND period_to = {to:Date}
          AND (model, computed_at) IN (SELECT model, computed_at FROM newest)
    )
SELECT
    channel,
    toDecimal128(sumIf(revenue, model = 'first_touch'), 2) AS first_touch,
    toDecimal128(sumIf(revenue, model = 'last_touch'), 2) AS last_touch,
    toDecimal128(sumIf(revenue, model = 'linear'), 2) AS linear,
    toDecimal128(sumIf(revenue, model = 'time_decay'), 2) AS time_decay,
    toDecimal128(sumIf(revenue, model = 'u_shaped'), 2) AS u_shaped,
    toDecimal128(sumIf(revenue, model = 'w_shaped'), 2) AS w_shaped,
    toDecimal128(sumIf(revenue, model = 'full_path'), 2) AS full_path,
    toDecimal128(sumIf(revenue, model = 'markov_1'), 2) AS markov_1,
    toDecimal128(sumIf(revenue, model = 'markov_2'), 2) AS markov_2,
    toDecimal128(sumIf(revenue, model = 'markov_3'), 2) AS markov_3,
    toDecimal128(sumIf(revenue, model = 'shapley'), 2) AS shapley
FROM revenue
GROUP BY channel
ORDER BY linear DESC, channel
