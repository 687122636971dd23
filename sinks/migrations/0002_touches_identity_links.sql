-- Touches (session starts) and identity links (visitor id -> lead id).
-- A touch is re-emitted with lead_id once its visitor is identified: lead_known is the version, so the
-- identified copy wins over the anonymous one whatever order they arrive in. Reports do not rely on
-- touches.lead_id: they join touches -> identity_links on visitor_id.

-- migrate:up
CREATE TABLE IF NOT EXISTS touches
(
    touch_id      String                 COMMENT 'Deterministic id: sha1(visitor_id|event_id)[:20]',
    visitor_id    String                 COMMENT 'Visitor whose session this touch starts',
    lead_id       String                 COMMENT 'Lead of the visitor when known at emission time; empty otherwise',
    lead_known    UInt8                  COMMENT 'Version column: 1 when lead_id is set (that copy wins)',
    site_id       LowCardinality(String) COMMENT 'Site of the touch',
    occurred_at   DateTime64(3, 'UTC')   COMMENT 'Time of the page view that started the touch (UTC)',
    channel       LowCardinality(String) COMMENT 'Default channel group, e.g. Paid Search',
    source        String                 COMMENT 'utm_source, or the referrer host, or (direct)',
    medium        LowCardinality(String) COMMENT 'utm_medium, or organic/referral/(none)',
    campaign      String                 COMMENT 'utm_campaign',
    term          String                 COMMENT 'utm_term',
    content       String                 COMMENT 'utm_content',
    click_id      LowCardinality(String) COMMENT 'Which click id marked it: gclid, msclkid, fbclid, li_fat_id',
    referrer_host String                 COMMENT 'Host of the referrer',
    landing_path  String                 COMMENT 'Path of the landing page',
    event_id      String                 COMMENT 'The page view that started the touch'
)
ENGINE = ReplacingMergeTree(lead_known)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY touch_id
COMMENT 'Touches (session starts) with their channel; deduplicated on touch_id';

CREATE TABLE IF NOT EXISTS identity_links
(
    visitor_id String               COMMENT 'Visitor id (cookie) that was identified',
    lead_id    String               COMMENT 'Lead id (HMAC of the normalised email) it belongs to',
    linked_at  DateTime64(3, 'UTC') COMMENT 'When the identify event happened (UTC)',
    event_id   String               COMMENT 'The identify event that made the link',
    form_id    String               COMMENT 'Form that was submitted, when known'
)
ENGINE = ReplacingMergeTree
ORDER BY (visitor_id, lead_id)
COMMENT 'Visitor -> lead links; one row per (visitor_id, lead_id)';

-- migrate:down
DROP TABLE IF EXISTS identity_links;
DROP TABLE IF EXISTS touches;
