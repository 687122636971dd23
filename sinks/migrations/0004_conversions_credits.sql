-- Conversions (one per lead and stage) and attribution credits (one per conversion, model and touch).
-- Both carry a version that grows when late touches change the journey: ReplacingMergeTree(version) keeps the
-- newest row per key. A newer version of a conversion may credit other touches than an older one, so readers
-- keep only the credit rows of the newest version per (conversion_id, model): see sinks/reports/*.sql.

-- migrate:up
CREATE TABLE IF NOT EXISTS conversions
(
    conversion_id String                   COMMENT 'Deterministic: sha1(lead_id|stage)[:24]',
    lead_id       String                   COMMENT 'Lead that reached the stage',
    stage         LowCardinality(String)   COMMENT 'lead, mql, sql, opportunity, customer, lost or disqualified',
    occurred_at   DateTime64(3, 'UTC')     COMMENT 'When the stage was first reached (UTC)',
    revenue       Nullable(Decimal(18, 2)) COMMENT 'Deal value, when the stage carries one',
    currency      LowCardinality(String)   COMMENT 'ISO 4217 currency of revenue; empty without revenue',
    touch_count   UInt32                   COMMENT 'Touches in the lookback window before the conversion',
    first_channel LowCardinality(String)   COMMENT 'Channel of the first touch in the window, (none) without touches',
    last_channel  LowCardinality(String)   COMMENT 'Channel of the last non-direct touch, (none) without touches',
    event_id      String                   COMMENT 'The event that reached the milestone',
    version       UInt32                   COMMENT 'Grows when late touches change the journey; the newest wins'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY conversion_id
COMMENT 'Lifecycle milestones of leads; newest version per conversion_id';

CREATE TABLE IF NOT EXISTS credits
(
    conversion_id String                         COMMENT 'Conversion credited',
    lead_id       String                         COMMENT 'Lead of the conversion',
    stage         LowCardinality(String)         COMMENT 'Stage of the conversion',
    model         LowCardinality(String)         COMMENT 'Attribution model, e.g. linear, w_shaped',
    touch_id      String                         COMMENT 'Touch credited; (none) when the conversion had no touch',
    touch_index   UInt32                         COMMENT 'Position of the touch in the journey, from 0',
    touch_at      Nullable(DateTime64(3, 'UTC')) COMMENT 'Time of the touch (UTC); NULL for (none)',
    converted_at  DateTime64(3, 'UTC')           COMMENT 'Time of the conversion (UTC)',
    channel       LowCardinality(String)         COMMENT 'Channel of the touch',
    source        String                         COMMENT 'Source of the touch',
    medium        LowCardinality(String)         COMMENT 'Medium of the touch',
    campaign      String                         COMMENT 'Campaign of the touch',
    credit        Decimal(12, 9)                 COMMENT 'Share of the conversion; sums to 1 per conversion and model',
    revenue       Decimal(18, 2)                 COMMENT 'Share of the revenue in cents; sums to the deal value',
    currency      LowCardinality(String)         COMMENT 'ISO 4217 currency of revenue; empty without revenue',
    version       UInt32                         COMMENT 'Conversion version these credits belong to'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY model
ORDER BY (conversion_id, model, touch_id)
COMMENT 'Attribution credits per conversion, model and touch; read the newest version per conversion and model';

-- migrate:down
DROP TABLE IF EXISTS credits;
DROP TABLE IF EXISTS conversions;
