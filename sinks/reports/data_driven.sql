-- Data-driven attribution of one stage and period (closedloop attribute writes it; docs/ATTRIBUTION.md,
-- "Data-driven models"): per model and channel the share, credited conversions with the 95% bootstrap
-- interval, credited revenue, the Markov removal effect and the journeys used. Only the newest run of each model
-- for exactly this stage and period counts (a re-run replaces the earlier one, migrations/0011_data_driven.sql).
-- By hand: clickhouse-client --param_stage=customer --param_from=2024-03-01 --param_to=2024-03-31
--          --queries-file sinks/reports/data_driven.sql
WITH
    newest AS
    (
        SELECT model, max(computed_at) AS computed_at
        FROM data_driven_credits
        WHERE stage = {stage:String} AND period_from = {from:Date} AND period_to = {to:Date}
        GROUP BY model
    )
SELECT
    toString(model) AS model,
    toString(channel) AS channel,
    round(share, 6) AS share,
    round(conversions, 4) AS conversions,
    round(ci_low, 4) AS ci_low,
    round(ci_high, 4) AS ci_high,
    toDecimal128(revenue, 2) AS revenue,
    round(removal_effect, 6) AS removal_effect,
    journeys,
    converting_journeys,
    bootstrap
FROM data_driven_credits FINAL
WHERE stage = {stage:String} AND period_from = {from:Date} AND period_to = {to:Date}
  AND (model, computed_at) IN (SELECT model, computed_at FROM newest)
ORDER BY model, conversions DESC, channel
