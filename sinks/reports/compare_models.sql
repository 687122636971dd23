-- Customer revenue per channel under every attribution model, side by side (exact: FINAL, newest version per
-- conversion and model). Columns are fixed so the file can be run by hand.
WITH
    latest AS
    (
        SELECT conversion_id, model, max(version) AS version
        FROM credits
        WHERE stage = 'customer' AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id, model
    )
SELECT
    channel,
    toDecimal128(sumIf(revenue, model = 'first_touch'), 2) AS first_touch,
    toDecimal128(sumIf(revenue, model = 'last_touch'), 2) AS last_touch,
    toDecimal128(sumIf(revenue, model = 'linear'), 2) AS linear,
    toDecimal128(sumIf(revenue, model = 'time_decay'), 2) AS time_decay,
    toDecimal128(sumIf(revenue, model = 'u_shaped'), 2) AS u_shaped,
    toDecimal128(sumIf(revenue, model = 'w_shaped'), 2) AS w_shaped,
    toDecimal128(sumIf(revenue, model = 'full_path'), 2) AS full_path
FROM credits FINAL
WHERE stage = 'customer' AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
  AND (conversion_id, model, version) IN (SELECT conversion_id, model, version FROM latest)
GROUP BY channel
ORDER BY linear DESC, channel
