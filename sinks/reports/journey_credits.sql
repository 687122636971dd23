-- closedloop journey: each model's credit per stage and channel (newest version of each conversion's credits).
SELECT
    stage,
    model,
    channel,
    sum(credit) AS credit,
    sum(revenue) AS revenue,
    any(currency) AS currency
FROM credits_current
WHERE lead_id = {lead_id:String}
GROUP BY stage, model, channel
ORDER BY stage, model, credit DESC, channel
