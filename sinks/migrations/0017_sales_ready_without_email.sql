-- The raw email lives in one ClickHouse table, `leads` (../shared/DOMAIN.md, docs/PRIVACY.md). sales_ready_leads
-- kept a copy for sales since 0012; `report ready-leads` now joins `leads` on the lead id instead, so an erased
-- lead shows no address anywhere, and the copies already stored go with the column.
--   SELECT s.ready_id, l.email FROM sales_ready_leads AS s FINAL LEFT JOIN leads AS l FINAL USING (lead_id)

-- migrate:up
ALTER TABLE sales_ready_leads DROP COLUMN IF EXISTS email;

-- migrate:down
-- The column comes back empty: the addresses were not kept (the leads table has them).
ALTER TABLE sales_ready_leads ADD COLUMN IF NOT EXISTS email String DEFAULT '' COMMENT 'Raw email for sales: personal data, erasable' AFTER cycle;
