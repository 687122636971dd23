-- Back to the ad platforms (docs/ADS.md).
--
-- touches: the ad click ids of the landing page view (the click time is the touch's occurred_at; Meta's fbc value
-- carries it too), its ad consent and Do-Not-Track flag. Touches stored before have '' / '' / 0.
-- conversions: the newest click of each kind in the conversion's lookback window, and the lead's ad consent at the
-- conversion's newest version ('' when never stated: nothing is exported or sent without 'granted').
-- ad_feedback: the audit trail, one row per conversion exported to a platform's file or sent to its API, and per
-- adjustment (retraction, restatement): which platform, when, which click id and value, and how it ended.
--   SELECT platform, action, status, count() FROM ad_feedback FINAL GROUP BY ALL

-- migrate:up
ALTER TABLE touches
    ADD COLUMN IF NOT EXISTS gclid String DEFAULT '' COMMENT 'Google Ads click id of the landing page (web)',
    ADD COLUMN IF NOT EXISTS gbraid String DEFAULT '' COMMENT 'Google Ads click id for iOS app-to-web (gbraid)',
    ADD COLUMN IF NOT EXISTS wbraid String DEFAULT '' COMMENT 'Google Ads click id for iOS web-to-app (wbraid)',
    ADD COLUMN IF NOT EXISTS msclkid String DEFAULT '' COMMENT 'Microsoft Advertising click id',
    ADD COLUMN IF NOT EXISTS fbc String DEFAULT '' COMMENT 'Meta fbc value: fb.1.<click time ms>.<fbclid>',
    ADD COLUMN IF NOT EXISTS li_fat_id String DEFAULT '' COMMENT 'LinkedIn first-party ads tracking id',
    ADD COLUMN IF NOT EXISTS ads_consent LowCardinality(String) DEFAULT '' COMMENT 'granted, denied, or empty: not stated on the page view',
    ADD COLUMN IF NOT EXISTS do_not_track UInt8 DEFAULT 0 COMMENT '1 when the page view carried Do-Not-Track / GPC';

ALTER TABLE conversions
    ADD COLUMN IF NOT EXISTS clicks Array(Tuple(kind LowCardinality(String), value String, clicked_at DateTime64(3, 'UTC'))) COMMENT 'Newest ad click of each kind in the lookback window: (gclid|gbraid|wbraid|msclkid|fbc|li_fat_id, id, click time)',
    ADD COLUMN IF NOT EXISTS ads_consent LowCardinality(String) DEFAULT '' COMMENT 'The lead''s ad consent: granted, denied (also after Do-Not-Track), or empty: never stated';

CREATE TABLE IF NOT EXISTS ad_feedback
(
    feedback_id     String                   COMMENT 'platform:action:conversion_id: one row per conversion, platform and action',
    conversion_id   String                   COMMENT 'Conversion exported or sent',
    lead_id         String                   COMMENT 'Lead of the conversion (no email here)',
    stage           LowCardinality(String)   COMMENT 'Stage of the conversion, e.g. sql, customer',
    platform        LowCardinality(String)   COMMENT 'google, microsoft (files), meta, linkedin (APIs)',
    route           LowCardinality(String)   COMMENT 'file (closedloop export ads) or api (closedloop deliver)',
    action          LowCardinality(String)   COMMENT 'upload, retract or restate',
    conversion_name String                   COMMENT 'Conversion name (files), event name (Meta) or conversion rule (LinkedIn)',
    click_kind      LowCardinality(String)   COMMENT 'gclid, gbraid, wbraid, msclkid, fbc or li_fat_id; empty when matched by email only',
    click_id        String                   COMMENT 'The click id sent',
    converted_at    DateTime64(3, 'UTC')     COMMENT 'When the conversion happened (UTC)',
    value           Nullable(Decimal(18, 2)) COMMENT 'Value sent; NULL without one',
    currency        LowCardinality(String)   COMMENT 'ISO 4217 currency of value; empty without one',
    status          LowCardinality(String)   COMMENT 'exported (written to a file), delivered, or dead (see reason)',
    reason          String                   COMMENT 'Why it is dead; empty otherwise',
    recorded_at     DateTime64(3, 'UTC')     COMMENT 'When it was exported or its delivery ended (UTC)'
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY feedback_id
COMMENT 'Audit trail of conversions fed back to ad platforms; one row per feedback_id after FINAL';

-- migrate:down
DROP TABLE IF EXISTS ad_feedback;
ALTER TABLE conversions DROP COLUMN IF EXISTS ads_consent, DROP COLUMN IF EXISTS clicks;
ALTER TABLE touches DROP COLUMN IF EXISTS do_not_track, DROP COLUMN IF EXISTS ads_consent, DROP COLUMN IF EXISTS li_fat_id, DROP COLUMN IF EXISTS fbc, DROP COLUMN IF EXISTS msclkid, DROP COLUMN IF EXISTS wbraid, DROP COLUMN IF EXISTS gbraid, DROP COLUMN IF EXISTS gclid;
