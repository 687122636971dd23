-- Leads: the one place a raw email lives. Erasure (GDPR): publish a tombstone (key lead_id, no value) to the
-- compacted leads topic, and the sink runs a lightweight DELETE; by hand:
--   DELETE FROM leads WHERE lead_id = '...'
-- (or ALTER TABLE leads DELETE WHERE lead_id = '...' to rewrite the parts at once).

-- migrate:up
CREATE TABLE IF NOT EXISTS leads
(
    lead_id             String               COMMENT 'HMAC-SHA256 of the normalised email (hex, 32 chars)',
    email               String               COMMENT 'Raw normalised email: personal data, erasable',
    first_identified_at DateTime64(3, 'UTC') COMMENT 'First identify event of the lead (UTC)'
)
ENGINE = ReplacingMergeTree
ORDER BY lead_id
COMMENT 'Lead id -> raw email; the only table with an email; erase with DELETE FROM leads WHERE lead_id = ...';

-- migrate:down
DROP TABLE IF EXISTS leads;
