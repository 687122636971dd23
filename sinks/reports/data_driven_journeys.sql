-- Every journey of a period for the data-driven models (sinks/data_driven_job.py), one row each: channels in time
-- order, whether it converted to {stage}, and the revenue of that conversion. Which journeys, and which of their
-- touches, is the `journeys` view's definition (migrations/0013_journeys_cohorts.sql).
SELECT arrayMap(s -> s.3, steps) AS channels, converted, revenue
FROM journeys(stage = {stage:String}, from = {from:Date}, to = {to:Date}, lookback_days = {lookback_days:UInt32})
