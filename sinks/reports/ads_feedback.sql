-- The ad platforms' audit trail (docs/ADS.md): conversions exported to Google's and Microsoft's files and sent to
-- Meta's and LinkedIn's APIs, recorded in the period, per platform, route (file or api), action (upload, retract,
-- restate), stage, status (exported, delivered, dead) and currency: how many, with a click id, their value, and
-- the last time one was recorded. One row per feedback id (FINAL): a re-export or replay is counted once.
SELECT
    platform,
    route,
    action,
    stage,
    status,
    currency,
    count() AS conversions,
    countIf(click_id != '') AS with_click_id,
    sum(ifNull(value, toDecimal64(0, 2))) AS value,
    max(recorded_at) AS last_recorded_at
FROM ad_feedback FINAL
WHERE toDate(recorded_at) BETWEEN {from:Date} AND {to:Date}
GROUP BY platform, route, action, stage, status, currency
ORDER BY platform, route, action, stage, status, currency
