-- The data-driven part of compare-models: customer revenue per channel under the Markov chains (orders 1-3) and
-- Shapley, as `closedloop attribute --stage customer` last computed them for exactly this period (the newest run
-- per model; a model not computed for the period shows 0.00). Same column types as compare_models.sql, so the two
-- can be joined on channel (docs/ATTRIBUTION.md, "Data-driven models").
WITH
    newest AS
    (
        SELECT model, max(computed_at) AS computed_at
        FROM data_driven_credits
        WHERE stage = 'customer' AND period_from = {from:Date} AND period_to = {to:Date}
        GROUP BY model
    )
SELECT
    toString(channel) AS channel,
    toDecimal128(sumIf(revenue, model = 'markov_1'), 2) AS markov_1,
    toDecimal128(sumIf(revenue, model = 'markov_2'), 2) AS markov_2,
    toDecimal128(sumIf(revenue, model = 'markov_3'), 2) AS markov_3,
    toDecimal128(sumIf(revenue, model = 'shapley'), 2) AS shapley
FROM data_driven_credits FINAL
WHERE stage = 'customer' AND period_from = {from:Date} AND period_to = {to:Date}
  AND (model, computed_at) IN (SELECT model, computed_at FROM newest)
GROUP BY channel
ORDER BY markov_1 DESC, channel
