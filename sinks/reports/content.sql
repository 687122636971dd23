-- Content influence: for each page, or page group ({groups}: patterns such as '/blog/*', '*' for any run of
-- characters; a page matching none is its own group), how many of the period's journeys to {stage} viewed it,
-- converting against not converting, the lift, and the page-level credits.
--   journeys              as the `journeys` view defines them (migration 0013), with page views instead of touches:
--                         converting leads (their page views from every visitor in [converted_at - lookback_days,
--                         converted_at]); leads with a page view in the period and no {stage} conversion up to its
--                         end, and anonymous visitors with a page view in the period (their views in the period)
--   converting_share      converting journeys that viewed the page / all converting journeys of the period
--   non_converting_share  the same among the non-converting journeys
--   lift                  converting_share / non_converting_share (empty when no non-converting journey viewed it)
--   credited_conversions  linear over the page views of each converting journey's window (a journey that viewed
--                         three pages gives each a third); credited_revenue: the conversion's revenue the same way;
--                         both split by the largest remainder, so each journey's parts add up exactly
WITH
    {groups:Array(String)} AS patterns,
    views AS
    (
        SELECT DISTINCT event_id, visitor_id, occurred_at,
               arrayFirst(p -> path LIKE replaceAll(replaceAll(replaceAll(p, '%', '\\%'), '_', '\\_'), '*', '%'),
                          patterns) AS matched,
               if(matched = '', path, matched) AS page
        FROM events
        WHERE event_type = 'page_view'
    ),
    lead_views AS
    (
        SELECT l.lead_id AS lead_id, v.event_id AS event_id, v.occurred_at AS occurred_at, v.page AS page
        FROM views AS v
        INNER JOIN (SELECT DISTINCT visitor_id, lead_id FROM identity_links FINAL) AS l ON v.visitor_id = l.visitor_id
    ),
    reached AS
    (
        SELECT lead_id, min(occurred_at) AS converted_at,
               toDecimal128(ifNull(argMin(revenue, occurred_at), 0), 2) AS revenue
        FROM conversions FINAL
        WHERE stage = {stage:String} AND toDate(occurred_at) <= {to:Date}
        GROUP BY lead_id
    ),
    converting AS
    (
        SELECT c.lead_id AS journey, any(c.revenue) AS revenue, groupArray(lv.page) AS pages
        FROM reached AS c
        INNER JOIN lead_views AS lv ON lv.lead_id = c.lead_id
        WHERE toDate(c.converted_at) >= {from:Date}
          AND lv.occurred_at <= c.converted_at
          AND lv.occurred_at >= c.converted_at - toIntervalDay({lookback_days:UInt32})
        GROUP BY c.lead_id
    ),
    not_converting AS
    (
        SELECT lead_id AS journey, groupUniqArray(page) AS pages
        FROM lead_views
        WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date} AND lead_id NOT IN (SELECT lead_id FROM reached)
        GROUP BY lead_id
        UNION ALL
        SELECT visitor_id, groupUniqArray(page)
        FROM views
        WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
          AND visitor_id NOT IN (SELECT visitor_id FROM identity_links)
        GROUP BY visitor_id
    ),
    totals AS
    (
        SELECT (SELECT count() FROM reached WHERE toDate(converted_at) >= {from:Date}) AS converting_total,
               (SELECT count() FROM not_converting) AS not_converting_total
    ),
    -- Each journey's conversion (1, in units of 1e-9) and revenue (in cents) split over its page views by the
    -- largest remainder, as the attribution models split theirs: the parts add up exactly (equal remainders: the
    -- page first by name gets the leftover unit).
    split AS
    (
        SELECT journey, page, count() AS k, any(n) AS n, toInt64(any(revenue) * 100) AS cents
        FROM (SELECT journey, revenue, pages, length(pages) AS n FROM converting)
        ARRAY JOIN pages AS page
        GROUP BY journey, page
    ),
    parts AS
    (
        SELECT journey, page,
               intDiv(1000000000 * k, n) AS credit_units, (1000000000 * k) % n AS credit_rest,
               intDiv(cents * k, n) AS money_cents, (cents * k) % n AS money_rest,
               1000000000 - sum(credit_units) OVER w AS credit_left,
               cents - sum(money_cents) OVER w AS money_left,
               row_number() OVER (PARTITION BY journey ORDER BY credit_rest DESC, page) AS credit_rank,
               row_number() OVER (PARTITION BY journey ORDER BY money_rest DESC, page) AS money_rank
        FROM split
        WINDOW w AS (PARTITION BY journey)
    ),
    credited AS
    (
        SELECT page, uniqExact(journey) AS converting_journeys,
               sum(toDecimal128(credit_units + if(credit_rank <= credit_left, 1, 0), 9) / 1000000000)
                   AS credited_conversions,
               sum(toDecimal128(money_cents + if(money_rank <= money_left, 1, 0), 2) / 100) AS credited_revenue
        FROM parts
        GROUP BY page
    ),
    seen AS
    (
        SELECT page, count() AS non_converting_journeys
        FROM not_converting
        ARRAY JOIN pages AS page
        GROUP BY page
    ),
    per_page AS
    (
        SELECT page, toUInt64(converting_journeys) AS converting_, toUInt64(0) AS non_converting_,
               toDecimal128(credited_conversions, 9) AS conversions_, toDecimal128(credited_revenue, 2) AS revenue_
        FROM credited
        UNION ALL
        SELECT page, toUInt64(0), toUInt64(non_converting_journeys), toDecimal128(0, 9), toDecimal128(0, 2)
        FROM seen
    )
SELECT
    page,
    sum(converting_) AS converting_journeys,
    sum(non_converting_) AS non_converting_journeys,
    if(any(t.converting_total) = 0, NULL, round(converting_journeys / any(t.converting_total), 4)) AS converting_share,
    if(any(t.not_converting_total) = 0, NULL,
       round(non_converting_journeys / any(t.not_converting_total), 4)) AS non_converting_share,
    if(non_converting_journeys = 0 OR any(t.converting_total) = 0, NULL,
       round((converting_journeys / any(t.converting_total))
             / (non_converting_journeys / any(t.not_converting_total)), 4)) AS lift,
    sum(conversions_) AS credited_conversions,
    sum(revenue_) AS credited_revenue
FROM per_page
CROSS JOIN totals AS t
GROUP BY page
ORDER BY credited_conversions DESC, credited_revenue DESC, converting_journeys DESC, non_converting_journeys DESC, page
LIMIT {limit:UInt32}
