-- Accounts (B2B buying committees): leads grouped by the domain of their email, unless it is a free-mail domain
-- (the table free_mail_domains; views of migrations/0014_accounts.sql); one row per account with a touch or a
-- conversion of one of its people in the period.
--   people            leads of the account (every one the leads table holds: an erased lead is gone)
--   touches           touches of all its people's visitors, ever; channels: their channels in order of first use
--   first_touch_at    the account's first touch
--   opportunity_at    the first opportunity of any of its people; won_at: the first customer
--   revenue           customer revenue of all its people up to the period's end
--   committee         of a won account: its people with a touch or a conversion on or before won_at
--   days_to_win       first touch -> won_at
WITH
    stages AS
    (
        SELECT * FROM account_stages WHERE toDate(occurred_at) <= {to:Date}
    ),
    per_account AS
    (
        SELECT account,
               minIf(occurred_at, stage = 'opportunity') AS opportunity_at_,
               minIf(occurred_at, stage = 'customer') AS won_at_,
               countIf(stage = 'opportunity') > 0 AS has_opportunity,
               countIf(stage = 'customer') > 0 AS won,
               toDecimal128(sumIf(revenue, stage = 'customer'), 2) AS revenue,
               countIf(toDate(occurred_at) >= {from:Date}) AS conversions_in_period
        FROM stages
        GROUP BY account
    ),
    touched AS
    (
        SELECT account, count() AS touches, min(occurred_at) AS first_touch_at,
               arrayDistinct(arrayMap(x -> x.2, arraySort(groupArray((occurred_at, channel))))) AS channels,
               countIf(toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}) AS touches_in_period,
               groupArray((lead_id, occurred_at)) AS person_touches
        FROM account_touches
        GROUP BY account
    ),
    members AS
    (
        SELECT account, count() AS people FROM account_people GROUP BY account
    ),
    person_stages AS
    (
        SELECT account, groupArray((lead_id, occurred_at)) AS person_stages FROM stages GROUP BY account
    )
SELECT
    m.account AS account,
    m.people AS people,
    toUInt64(ifNull(t.touches, 0)) AS touches,
    arrayStringConcat(ifNull(t.channels, []), ' > ') AS channels,
    t.first_touch_at AS first_touch_at,
    if(a.has_opportunity, a.opportunity_at_, NULL) AS opportunity_at,
    if(a.won, a.won_at_, NULL) AS won_at,
    ifNull(a.revenue, toDecimal128(0, 2)) AS revenue,
    if(a.won,
       toUInt64(length(arrayDistinct(arrayMap(x -> x.1, arrayFilter(x -> x.2 <= a.won_at_,
           arrayConcat(ifNull(t.person_touches, []), ifNull(s.person_stages, []))))))),
       NULL) AS committee,
    if(a.won AND t.first_touch_at IS NOT NULL,
       round((toUnixTimestamp64Milli(a.won_at_) - toUnixTimestamp64Milli(t.first_touch_at)) / 86400000, 2),
       NULL) AS days_to_win
FROM members AS m
LEFT JOIN touched AS t ON t.account = m.account
LEFT JOIN per_account AS a ON a.account = m.account
LEFT JOIN person_stages AS s ON s.account = m.account
WHERE ifNull(t.touches_in_period, 0) > 0 OR ifNull(a.conversions_in_period, 0) > 0
ORDER BY revenue DESC, people DESC, account
LIMIT {limit:UInt32}
SETTINGS join_use_nulls = 1
