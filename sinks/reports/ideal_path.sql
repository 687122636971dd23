-- The ideal path: the paths of a period's journeys to {stage} (the `journeys` view, migration 0013: converting
-- leads within the lookback window, and the leads and anonymous visitors that did not convert), each with how
-- many journeys took it, how many converted and did not, side by side, the conversion rate and the median days
-- from the first touch to the conversion.
--   by = 'channel'       a path is the channels of the touches;  by = 'landing_page' their landing pages
--   Consecutive repeats collapse ("Paid Search > Paid Search > Email" is "Paid Search > Email"), as for the
--   data-driven models; a converting journey without a touch is '(none)'.
--   order = 'common'     most conversions first;  order = 'fastest'  converting paths with the lowest median first
--   (paths with fewer than {min_conversions} conversions after them, so one lucky lead does not lead the list)
WITH
    paths AS
    (
        SELECT
            arrayMap(s -> if({by:String} = 'landing_page', s.4, s.3), steps) AS elements,
            arrayFilter((e, i) -> i = 1 OR e != elements[i - 1], elements, arrayEnumerate(elements)) AS collapsed,
            if(empty(collapsed), '(none)', arrayStringConcat(collapsed, ' > ')) AS path,
            converted,
            revenue,
            if(converted = 1 AND notEmpty(steps),
               (toUnixTimestamp64Milli(assumeNotNull(converted_at)) - toUnixTimestamp64Milli(steps[1].1)) / 86400000,
               NULL) AS days
        FROM journeys(stage = {stage:String}, from = {from:Date}, to = {to:Date},
                      lookback_days = {lookback_days:UInt32})
    )
SELECT
    path,
    count() AS journeys,
    toUInt64(sum(converted)) AS converting,
    journeys - converting AS not_converting,
    round(converting / journeys, 4) AS conversion_rate,
    round(quantileExactInclusive(0.5)(days), 2) AS median_days_to_convert,
    toDecimal128(sum(revenue), 2) AS revenue
FROM paths
GROUP BY path
ORDER BY
    {order:String} = 'fastest' AND converting < {min_conversions:UInt32},
    if({order:String} = 'fastest', ifNull(median_days_to_convert, inf), 0),
    converting DESC,
    journeys DESC,
    path
LIMIT {limit:UInt32}
