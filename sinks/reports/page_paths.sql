-- The page sequences before the form: for every visitor identified in the period, the last {pages} page paths
-- they viewed up to their first identify event, and how many visitors took each sequence.
WITH
    forms AS
    (
        SELECT visitor_id, min(occurred_at) AS identified_at
        FROM events
        WHERE event_type = 'identify' AND toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY visitor_id
    ),
    sequences AS
    (
        SELECT e.visitor_id AS visitor_id,
               arraySlice(arrayMap(x -> x.2, arraySort(groupArray((e.occurred_at, e.path)))),
                          -toInt64({pages:UInt32})) AS pages
        FROM (SELECT DISTINCT event_id, visitor_id, occurred_at, path FROM events
              WHERE event_type = 'page_view' AND visitor_id IN (SELECT visitor_id FROM forms)) AS e
        INNER JOIN forms AS f ON f.visitor_id = e.visitor_id
        WHERE e.occurred_at <= f.identified_at
        GROUP BY e.visitor_id
    )
SELECT arrayStringConcat(pages, ' > ') AS pages_before_form, count() AS visitors
FROM sequences
GROUP BY pages_before_form
ORDER BY visitors DESC, pages_before_form
LIMIT {limit:UInt32}
