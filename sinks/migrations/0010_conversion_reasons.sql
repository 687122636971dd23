-- Why a lead was lost or disqualified, as the CRM said it (HubSpot closed_lost_reason or hs_lead_status,
-- Pipedrive lost_reason, a Salesforce reason field, the generic webhook's or a sheet's reason): the reason of the
-- record that reached the stage (its earliest). Conversions stored before have ''.
--
-- The lead-quality report (sinks/reports/quality.sql) counts the top reasons per channel.

-- migrate:up
ALTER TABLE conversions
    ADD COLUMN IF NOT EXISTS reason String DEFAULT '' COMMENT 'The CRM''s reason for the stage (lost, disqualified); empty when none was sent'
    AFTER event_id;

-- migrate:down
ALTER TABLE conversions DROP COLUMN IF EXISTS reason;
