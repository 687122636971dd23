-- The most common channel paths of leads that reached {stage} (default customer) in the period: the channels of
-- every touch in the conversion's journey, in order, from the linear credits (which credit every touch).
-- Consecutive repeats of a channel are kept: "Paid Search > Paid Search" is two visits from ads.
WITH
    latest AS
    (
        SELECT conversion_id, max(version) AS version
        FROM credits
        WHERE model = 'linear' AND stage = {stage:String}
          AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
        GROUP BY conversion_id
    ),
    journeys AS
    (
        SELECT conversion_id,
               arrayStringConcat(arrayMap(x -> x.2, arraySort(groupArray((touch_index, channel)))), ' > ') AS path,
               count() AS touches
        FROM credits FINAL
        WHERE model = 'linear' AND stage = {stage:String}
          AND toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
          AND (conversion_id, version) IN (SELECT conversion_id, version FROM latest)
        GROUP BY conversion_id
    )
SELECT path, count() AS conversions, round(avg(touches), 2) AS avg_touches
FROM journeys
GROUP BY path
ORDER BY conversions DESC, path
LIMIT {limit:UInt32}
