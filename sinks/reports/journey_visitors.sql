-- closedloop journey: the lead's visitors (devices), when and by which form each was identified.
SELECT
    visitor_id,
    min(linked_at) AS identified_at,
    argMin(form_id, linked_at) AS form_id
FROM identity_links FINAL
WHERE lead_id = {lead_id:String}
GROUP BY visitor_id
ORDER BY identified_at, visitor_id
