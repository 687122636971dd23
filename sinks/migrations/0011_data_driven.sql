-- Data-driven attribution (sinks/datadriven.py, docs/ATTRIBUTION.md "Data-driven models"): per model, stage,
-- period and channel, the credit computed over all journeys of the period by `closedloop attribute`.
-- A re-run of the same model, stage and period writes a newer computed_at: readers keep the rows of the newest
-- run per (model, stage, period_from, period_to), so a channel absent from the newest run is not shown either
-- (sinks/reports/data_driven.sql).

-- migrate:up
CREATE TABLE IF NOT EXISTS data_driven_credits
(
    model                  LowCardinality(String) COMMENT 'markov_1, markov_2, markov_3 (chain order) or shapley',
    stage                  LowCardinality(String) COMMENT 'Stage whose conversions are credited, e.g. customer',
    period_from            Date                   COMMENT 'First day of the period (conversions and touches), inclusive',
    period_to              Date                   COMMENT 'Last day of the period, inclusive',
    channel                LowCardinality(String) COMMENT 'Channel credited',
    share                  Float64                COMMENT 'Share of the conversions; sums to 1 per run (0 without conversions)',
    conversions            Float64                COMMENT 'Credited conversions: share x converting journeys (Shapley: its value)',
    revenue                Decimal(18, 2)         COMMENT 'Credited revenue of the stage (customer: deal values)',
    removal_effect         Float64                COMMENT 'Markov removal effect; 0 for Shapley',
    ci_low                 Float64                COMMENT '2.5 percentile of credited conversions over the bootstrap resamples',
    ci_high                Float64                COMMENT '97.5 percentile of credited conversions over the bootstrap resamples',
    bootstrap              UInt32                 COMMENT 'Bootstrap resamples (0: the interval is the estimate)',
    journeys               UInt64                 COMMENT 'Journeys with at least one touch used, converting or not',
    converting_journeys    UInt64                 COMMENT 'Of those, the converting ones',
    conversion_probability Float64                COMMENT 'Markov P(conversion) from start; Shapley: the observed rate',
    computed_at            DateTime64(3, 'UTC')   COMMENT 'When the run was made; the newest run per model, stage and period wins'
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (model, stage, period_from, period_to, channel)
COMMENT 'Data-driven attribution credits per model, stage, period and channel; read the newest computed_at per run key';

-- migrate:down
DROP TABLE IF EXISTS data_driven_credits;
