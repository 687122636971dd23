-- credits_current: the credits analysts should query by hand. A re-attributed conversion (late touches changed
-- its journey) keeps the rows of its older credit versions under their own keys (they may credit other touches),
-- so `credits FINAL` alone would count it twice. This view keeps, per model and conversion, only the newest
-- version's rows, using credit_versions (migration 0007) so that only the few re-attributed conversions need the
-- version filter; it is the same rule the channel report applies (sinks/reports/channels.sql).
--
-- Example: SELECT channel, sum(revenue) FROM credits_current WHERE model = 'linear' AND stage = 'customer'
--          GROUP BY channel ORDER BY 2 DESC
-- A plain view: nothing to back-fill.

-- migrate:up
CREATE VIEW IF NOT EXISTS credits_current AS
SELECT *
FROM credits FINAL
WHERE (model, conversion_id) NOT IN (SELECT model, conversion_id FROM credit_versions FINAL WHERE oldest < newest)
   OR (model, conversion_id, version) IN (SELECT model, conversion_id, newest FROM credit_versions FINAL
                                          WHERE oldest < newest)
COMMENT 'Credits of the newest version per model and conversion (what to sum by hand); same columns as credits';

-- migrate:down
DROP VIEW IF EXISTS credits_current;
