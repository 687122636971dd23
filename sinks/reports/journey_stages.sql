-- closedloop journey: the lead's lifecycle stages, with the deal value, the CRM's reason and the touches behind
-- each (newest version of each conversion).
SELECT
    c.stage AS stage,
    c.occurred_at AS occurred_at,
    c.revenue AS revenue,
    c.currency AS currency,
    c.touch_count AS touches,
    c.first_channel AS first_channel,
    c.last_channel AS last_channel,
    JSONExtractString(e.event, 'reason') AS reason
FROM conversions AS c FINAL
LEFT JOIN
(
    SELECT event_id, any(event) AS event
    FROM events
    WHERE event_type = 'crm_status'
      AND event_id IN (SELECT event_id FROM conversions FINAL WHERE lead_id = {lead_id:String})
    GROUP BY event_id
) AS e ON e.event_id = c.event_id
WHERE c.lead_id = {lead_id:String}
ORDER BY occurred_at, stage
