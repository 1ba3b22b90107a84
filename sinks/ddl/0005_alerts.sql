-- Alert firings and their delivery, for the stream processors to come (threshold rules,
-- webhooks). Today only the user's own alerts (alert_raised events) arrive, with rule = 'user'.
--
-- A firing's life (fired, delivered after N attempts, resolved) is written as new versions of
-- one row: ReplacingMergeTree keeps the one with the highest updated_at per alert_id, and
-- alerts_current reads with FINAL so nobody sees two versions of an alert.
-- delivery_state: pending, delivering, delivered, failed, suppressed.

CREATE TABLE IF NOT EXISTS {database}.alerts
(
    alert_id         String,
    rule             LowCardinality(String),
    project          LowCardinality(String),
    run_id           String,
    metric           String,
    value            Nullable(Float64),
    step             Nullable(Int64),
    level            LowCardinality(String),
    title            String,
    text             String,
    fired_at         DateTime64(6, 'UTC'),
    resolved_at      Nullable(DateTime64(6, 'UTC')),
    delivery_state   LowCardinality(String) DEFAULT 'pending',
    attempts         UInt32 DEFAULT 0,
    last_attempt_at  Nullable(DateTime64(6, 'UTC')),
    last_error       String DEFAULT '',
    source_seq       Nullable(UInt64),
    updated_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project, run_id, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The event id is the alert id, so a re-inserted event replaces itself. updated_at is the
-- event's ts rather than now64(): any later version written by a processor wins over it.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.alerts_mv TO {database}.alerts
AS SELECT
    toString(event_id) AS alert_id,
    'user' AS rule,
    project,
    run_id,
    '' AS metric,
    CAST(NULL, 'Nullable(Float64)') AS value,
    CAST(NULL, 'Nullable(Int64)') AS step,
    JSONExtractString(body, 'level') AS level,
    JSONExtractString(body, 'title') AS title,
    JSONExtractString(body, 'text') AS text,
    ts AS fired_at,
    CAST(NULL, 'Nullable(DateTime64(6, \'UTC\'))') AS resolved_at,
    'pending' AS delivery_state,
    toUInt32(0) AS attempts,
    CAST(NULL, 'Nullable(DateTime64(6, \'UTC\'))') AS last_attempt_at,
    '' AS last_error,
    seq AS source_seq,
    ts AS updated_at
FROM {database}.events
WHERE type = 'alert_raised';

-- Backfill: same rows, same keys and versions as the view writes, so repeats collapse.
INSERT INTO {database}.alerts
SELECT
    toString(event_id),
    'user',
    project,
    run_id,
    '',
    CAST(NULL, 'Nullable(Float64)'),
    CAST(NULL, 'Nullable(Int64)'),
    JSONExtractString(body, 'level'),
    JSONExtractString(body, 'title'),
    JSONExtractString(body, 'text'),
    ts,
    CAST(NULL, 'Nullable(DateTime64(6, \'UTC\'))'),
    'pending',
    toUInt32(0),
    CAST(NULL, 'Nullable(DateTime64(6, \'UTC\'))'),
    '',
    seq,
    ts
FROM {database}.events
WHERE type = 'alert_raised'
    AND toString(event_id) NOT IN (SELECT alert_id FROM {database}.alerts WHERE rule = 'user');

CREATE VIEW IF NOT EXISTS {database}.alerts_current AS
SELECT * FROM {database}.alerts FINAL;
