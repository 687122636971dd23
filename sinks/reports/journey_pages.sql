-- closedloop journey: every page view and form of the lead's visitors, in order, before and after they were
-- identified; a page view that started a touch (a session) shows its channel, the others leave it empty.
WITH lead_visitors AS (SELECT DISTINCT visitor_id FROM identity_links FINAL WHERE lead_id = {lead_id:String})
SELECT
    e.occurred_at AS occurred_at,
    e.visitor_id AS visitor_id,
    if(e.event_type = 'identify', 'form', 'page') AS kind,
    if(e.event_type = 'identify', e.form_id, e.path) AS page_or_form,
    t.channel AS channel,
    t.source AS source,
    t.medium AS medium,
    t.campaign AS campaign
FROM events AS e FINAL
LEFT JOIN
(
    SELECT event_id, channel, source, medium, campaign
    FROM touches FINAL
    WHERE visitor_id IN lead_visitors
) AS t ON t.event_id = e.event_id
WHERE e.event_type IN ('page_view', 'identify') AND e.visitor_id IN lead_visitors
ORDER BY occurred_at, e.event_id
LIMIT {limit:UInt32}
