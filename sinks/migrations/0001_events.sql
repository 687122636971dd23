-- Raw events from the source topics (events, crm, spend), one row per envelope, with Kafka provenance.
-- ReplacingMergeTree on the event id: a resent or replayed event collapses to one row after FINAL or a merge.
-- Every key column (event_type, visitor_id) is fixed by the event id, so duplicates always share a key.
-- Emails and form field values are removed from the stored JSON: the raw email lives only in `leads`.

-- migrate:up
CREATE TABLE IF NOT EXISTS events
(
    event_id        String                          COMMENT 'Envelope event id; unique per event, a resend keeps it',
    event_type      LowCardinality(String)          COMMENT 'page_view, identify, crm_status or spend',
    site_id         LowCardinality(String)          COMMENT 'Site or CRM connection that sent the event',
    occurred_at     DateTime64(3, 'UTC')            COMMENT 'When it happened at the source (UTC)',
    received_at     DateTime64(3, 'UTC')            COMMENT 'Collector clock at acceptance (UTC)',
    sent_at         Nullable(DateTime64(3, 'UTC'))  COMMENT 'Client clock at send time, when given',
    visitor_id      String                          COMMENT 'First-party visitor id (page_view, identify); empty otherwise',
    url             String                          COMMENT 'Page URL (page_view) or form URL (identify)',
    path            String                          COMMENT 'URL path of the page view',
    referrer        String                          COMMENT 'Referrer URL of the page view',
    utm_source      String                          COMMENT 'utm_source (from the event or its URL)',
    utm_medium      String                          COMMENT 'utm_medium',
    utm_campaign    String                          COMMENT 'utm_campaign',
    utm_term        String                          COMMENT 'utm_term',
    utm_content     String                          COMMENT 'utm_content',
    click_id        String                          COMMENT 'Which click id the URL carried: gclid, msclkid, fbclid or li_fat_id',
    form_id         String                          COMMENT 'Form of an identify event',
    crm             LowCardinality(String)          COMMENT 'CRM of a crm_status event',
    crm_object_id   String                          COMMENT 'CRM record that changed',
    crm_contact_id  String                          COMMENT 'CRM id of the person, when known',
    stage           LowCardinality(String)          COMMENT 'Lifecycle stage of a crm_status event',
    amount          Nullable(Decimal(18, 2))        COMMENT 'Deal value (crm_status) or cost (spend)',
    currency        LowCardinality(String)          COMMENT 'ISO 4217 currency of amount',
    schema_version  UInt16                          COMMENT 'Envelope schema version',
    event           String                          COMMENT 'The event payload as JSON, email and form field values removed',
    kafka_topic     LowCardinality(String)          COMMENT 'Kafka topic the record was read from',
    kafka_partition UInt32                          COMMENT 'Kafka partition of the record',
    kafka_offset    UInt64                          COMMENT 'Kafka offset of the record',
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When the sink wrote the row'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_type, visitor_id, event_id)
COMMENT 'Raw events of the source topics, with Kafka provenance; deduplicated on event_id';

-- migrate:down
DROP TABLE IF EXISTS events;
