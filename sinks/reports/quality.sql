-- Lead quality by channel (or campaign): of the leads that arrived in the period (their 'lead' conversion), how
-- many each channel brought under {model} (the sum of its lead-stage credits), and what became of them: the shares
-- that reached MQL, SQL, customer, and lost or disqualified, the most frequent reasons for losing them, the average
-- deal value of the won ones and the median sales cycle (lead -> customer, days; the mean of the two middle
-- values for an even count).
-- Rates weigh each lead by the channel's credit for it, so they are the channel's share of outcomes, whatever the
-- model; the median counts every won lead the channel has a credit for once. Exact: FINAL, newest versions.
WITH
    cohort AS
    (
        SELECT lead_id, occurred_at AS lead_at
        FROM conversions FINAL
        WHERE stage = 'lead' AND toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
    ),
    outcomes AS
    (
        SELECT
            lead_id,
            groupUniqArray(stage) AS reached,
            minIf(occurred_at, stage = 'customer') AS won_at,
            sumIf(revenue, stage = 'customer') AS deal_value,
            anyIf(reason, stage IN ('lost', 'disqualified') AND reason != '') AS lost_reason
        FROM conversions FINAL
        WHERE lead_id IN (SELECT lead_id FROM cohort)
        GROUP BY lead_id
    ),
    weights AS
    (
        SELECT lead_id, if({by_campaign:UInt8} = 1, campaign, channel) AS channel, sum(credit) AS weight
        FROM credits_current
        WHERE model = {model:String} AND stage = 'lead' AND lead_id IN (SELECT lead_id FROM cohort)
        GROUP BY lead_id, channel
        HAVING weight > 0
    ),
    joined AS
    (
        SELECT
            w.channel AS channel,
            toFloat64(w.weight) AS weight,
            has(o.reached, 'mql') AS mql,
            has(o.reached, 'sql') AS sql,
            has(o.reached, 'customer') AS won,
            has(o.reached, 'lost') OR has(o.reached, 'disqualified') AS lost,
            o.lost_reason AS lost_reason,
            toFloat64(o.deal_value) AS deal_value,
            dateDiff('second', c.lead_at, o.won_at) / 86400 AS cycle_days
        FROM weights AS w
        INNER JOIN outcomes AS o ON o.lead_id = w.lead_id
        INNER JOIN cohort AS c ON c.lead_id = w.lead_id
    )
SELECT
    channel,
    toDecimal128(sum(weight), 9) AS leads,
    round(sumIf(weight, mql) / sum(weight), 4) AS mql_rate,
    round(sumIf(weight, sql) / sum(weight), 4) AS sql_rate,
    round(sumIf(weight, won) / sum(weight), 4) AS win_rate,
    round(sumIf(weight, lost) / sum(weight), 4) AS lost_rate,
    arrayStringConcat(topKWeightedIf(3)(lost_reason, toUInt64(round(weight * 1000000)), lost AND lost_reason != ''), '; ')
        AS top_lost_reasons,
    if(sumIf(weight, won) = 0, NULL, toDecimal64(round(sumIf(weight * deal_value, won) / sumIf(weight, won), 2), 2))
        AS avg_deal_value,
    if(countIf(won) = 0, NULL, round(quantileExactInclusiveIf(0.5)(cycle_days, won), 2)) AS median_days_lead_to_customer
FROM joined
GROUP BY channel
ORDER BY leads DESC, channel
