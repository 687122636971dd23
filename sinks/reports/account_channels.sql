-- Account-level attribution per channel (B2B): an account (leads grouped by email domain, as in accounts.sql)
-- converts once per milestone, when the first of its people reaches it; that conversion is credited linearly over
-- the touches of all its people in [milestone - {lookback_days} days, milestone].
--   accounts_touched  accounts with a touch on the channel in the period (plain count)
--   opportunities     accounts whose first opportunity falls in the period, credited (sums of shares)
--   won               accounts whose first customer falls in the period, credited
--   revenue           of those won accounts: the customer revenue of all their people up to the period's end,
--                     credited by the same shares (split in whole cents by the largest remainder, so the channels
--                     add up to the revenue exactly)
--   avg_committee     the won accounts' committee size (people with a touch or a conversion up to the win),
--                     averaged with the channel's credits as weights
-- A milestone with no touch in its window is credited to '(none)'.
WITH
    stages AS
    (
        SELECT * FROM account_stages WHERE toDate(occurred_at) <= {to:Date}
    ),
    milestones AS
    (
        -- (account, stage, when, revenue, committee) of the accounts' first opportunity and first customer
        SELECT account, stage, min(occurred_at) AS reached_at,
               if(stage = 'customer', toDecimal128(sum(revenue), 2), toDecimal128(0, 2)) AS revenue
        FROM stages
        WHERE stage IN ('opportunity', 'customer')
        GROUP BY account, stage
        HAVING toDate(reached_at) >= {from:Date}
    ),
    committees AS
    (
        SELECT m.account AS account, uniqExact(x.lead_id) AS committee
        FROM milestones AS m
        INNER JOIN
        (
            SELECT account, lead_id, occurred_at FROM account_touches
            UNION ALL
            SELECT account, lead_id, occurred_at FROM stages
        ) AS x ON x.account = m.account
        WHERE m.stage = 'customer' AND x.occurred_at <= m.reached_at
        GROUP BY m.account
    ),
    windows AS
    (
        -- the channels of each milestone's window, one element per touch ('(none)' for an empty window)
        SELECT m.account AS account, m.stage AS stage, any(m.revenue) AS revenue,
               groupArrayIf(t.channel, t.occurred_at <= m.reached_at
                            AND t.occurred_at >= m.reached_at - toIntervalDay({lookback_days:UInt32})) AS channels
        FROM milestones AS m
        LEFT JOIN account_touches AS t ON t.account = m.account
        GROUP BY m.account, m.stage
    ),
    -- Each milestone's share (in units of 1e-9) and revenue (in cents) split over its window's touches by the
    -- largest remainder, as the rule-based models split theirs (docs/ATTRIBUTION.md): every part is within a unit
    -- of its exact share, and the parts add up to exactly 1 and to the revenue (equal remainders: the channel
    -- first by name gets the leftover unit).
    split AS
    (
        SELECT account, stage, channel, count() AS k, any(n) AS n, toInt64(any(revenue) * 100) AS cents
        FROM
        (
            SELECT account, stage, revenue, if(empty(channels), ['(none)'], channels) AS credited_channels,
                   length(credited_channels) AS n
            FROM windows
        )
        ARRAY JOIN credited_channels AS channel
        GROUP BY account, stage, channel
    ),
    parts AS
    (
        SELECT account, stage, channel,
               intDiv(1000000000 * k, n) AS share_units, (1000000000 * k) % n AS share_rest,
               intDiv(cents * k, n) AS money_cents, (cents * k) % n AS money_rest,
               1000000000 - sum(share_units) OVER w AS share_left,
               cents - sum(money_cents) OVER w AS money_left,
               row_number() OVER (PARTITION BY account, stage ORDER BY share_rest DESC, channel) AS share_rank,
               row_number() OVER (PARTITION BY account, stage ORDER BY money_rest DESC, channel) AS money_rank
        FROM split
        WINDOW w AS (PARTITION BY account, stage)
    ),
    credited AS
    (
        SELECT account, stage, channel,
               toDecimal128(share_units + if(share_rank <= share_left, 1, 0), 9) / 1000000000 AS share,
               toDecimal128(money_cents + if(money_rank <= money_left, 1, 0), 2) / 100 AS money
        FROM parts
    ),
    touched AS
    (
        SELECT channel, uniqExact(account) AS accounts_touched
        FROM account_touches
        WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY channel
    ),
    by_channel AS
    (
        SELECT c.channel AS channel,
               sumIf(c.share, c.stage = 'opportunity') AS opportunities,
               sumIf(c.share, c.stage = 'customer') AS won,
               sumIf(c.money, c.stage = 'customer') AS revenue,
               sumIf(toFloat64(c.share) * k.committee, c.stage = 'customer') AS committee_weight
        FROM credited AS c
        LEFT JOIN committees AS k ON k.account = c.account
        GROUP BY c.channel
    )
SELECT
    channel,
    toUInt64(sum(accounts_touched_)) AS accounts_touched,
    sum(opportunities_) AS opportunities,
    sum(won_) AS won,
    toDecimal128(sum(revenue_), 2) AS revenue,
    if(won = 0, NULL, round(sum(committee_weight_) / toFloat64(won), 2)) AS avg_committee
FROM
(
    SELECT channel, toUInt64(0) AS accounts_touched_, toDecimal128(opportunities, 9) AS opportunities_,
           toDecimal128(won, 9) AS won_, toDecimal128(revenue, 2) AS revenue_, committee_weight AS committee_weight_
    FROM by_channel
    UNION ALL
    SELECT channel, toUInt64(accounts_touched), toDecimal128(0, 9), toDecimal128(0, 9), toDecimal128(0, 2), 0.0
    FROM touched
)
GROUP BY channel
ORDER BY revenue DESC, won DESC, opportunities DESC, accounts_touched DESC, channel
