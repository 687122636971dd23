-- Sales-ready leads (docs/SCORING.md): one row per lead and readiness cycle that became sales-ready in the period,
-- newest first, with why (threshold or the hand-raiser rule), the score and the points of each rule, and the
-- journey summary: first touch, touches, the newest pages in order (of `pages` viewed), forms. The email, for
-- sales, comes from `leads`, the one table that keeps it (migration 0017): an erased lead shows none. FINAL: a
-- replayed record collapses on ready_id.
SELECT
    ready_at,
    s.lead_id AS lead_id,
    ifNull(l.email, '') AS email,
    cycle,
    reason,
    score,
    arrayStringConcat(arrayMap(p -> concat(tupleElement(p, 1), ' ', toString(tupleElement(p, 2))), breakdown), ', ')
        AS breakdown,
    JSONExtractString(journey, 'first_touch', 'channel') AS first_channel,
    JSONExtractString(journey, 'first_touch', 'campaign') AS first_campaign,
    toUInt32(JSONLength(journey, 'touches')) AS touches,
    arrayStringConcat(
        arrayMap(t -> JSONExtractString(t, 'channel'), JSONExtractArrayRaw(journey, 'touches')), ' > '
    ) AS channels,
    toUInt32(JSONLength(journey, 'pages')) AS pages,
    arrayStringConcat(arraySlice(JSONExtract(journey, 'pages', 'Array(String)'), -10), ' > ') AS last_pages,
    arrayStringConcat(JSONExtract(journey, 'forms', 'Array(String)'), ', ') AS forms
FROM sales_ready_leads AS s FINAL
LEFT JOIN (SELECT lead_id, any(email) AS email FROM leads FINAL GROUP BY lead_id) AS l ON l.lead_id = s.lead_id
WHERE toDate(ready_at) BETWEEN {from:Date} AND {to:Date}
ORDER BY ready_at DESC, ready_id
LIMIT {limit:UInt32}
