-- Lead scores and sales-ready leads (docs/SCORING.md).
--
-- lead_scores: one row per score change, keyed by (lead_id, event_id) so a replayed event collapses; the breakdown
-- says which rule gave how many points. The newest score of a lead: argMax(score, scored_at).
--
-- sales_ready_leads: one row per lead and readiness cycle (ready_id = '<lead_id>:<cycle>'); a replay re-sends the
-- same ready_id and ReplacingMergeTree keeps one (read with FINAL for an exact list before merges). It carries the
-- contact's raw email for sales: personal data, erased with the lead (DELETE ... WHERE lead_id = '...',
-- docs/PRIVACY.md).

-- migrate:up
CREATE TABLE IF NOT EXISTS lead_scores
(
    lead_id   String                                     COMMENT 'Keyed lead id',
    scored_at DateTime64(3, 'UTC')                       COMMENT 'Time of the event that changed the score',
    score     Float64                                    COMMENT 'Total points at scored_at',
    breakdown Array(Tuple(rule String, points Float64)) COMMENT 'Points per rule, e.g. (page:/pricing, 10)',
    event_id  String                                     COMMENT 'The event that changed the score'
)
ENGINE = ReplacingMergeTree
ORDER BY (lead_id, event_id)
COMMENT 'Score changes with their breakdown; a replayed event collapses on (lead_id, event_id)';

CREATE TABLE IF NOT EXISTS sales_ready_leads
(
    ready_id  String                                     COMMENT '<lead_id>:<cycle>: one per lead and cycle',
    lead_id   String                                     COMMENT 'Keyed lead id',
    cycle     UInt32                                     COMMENT '1, then +1 after lost/disqualified and a new one',
    email     String                                     COMMENT 'Raw email for sales: personal data, erasable',
    ready_at  DateTime64(3, 'UTC')                       COMMENT 'When the lead became sales-ready',
    reason    LowCardinality(String)                     COMMENT 'threshold or the hand-raiser rule that fired',
    score     Float64                                    COMMENT 'Score at ready_at',
    breakdown Array(Tuple(rule String, points Float64)) COMMENT 'Points per rule at ready_at',
    journey   String                                     COMMENT 'JSON: first touch, touches, pages, forms',
    event_id  String                                     COMMENT 'The event that made the lead sales-ready'
)
ENGINE = ReplacingMergeTree
ORDER BY ready_id
COMMENT 'Sales-ready leads; a replay collapses on ready_id; erase with DELETE FROM sales_ready_leads WHERE lead_id';

-- migrate:down
DROP TABLE IF EXISTS sales_ready_leads;
DROP TABLE IF EXISTS lead_scores;
