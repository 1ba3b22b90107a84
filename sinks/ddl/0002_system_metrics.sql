-- Host and process metrics (cpu.percent, gpu.0.temp, ...) as one row per run, name and time,
-- derived from the `system_metrics` events the sink already stores: the sink stays unaware.
--
-- Values are decoded with JSONExtractKeysAndValues(..., 'Float64'), which turns the schema's
-- "NaN", "Infinity" and "-Infinity" strings into nan, inf and -inf and keeps the sign of -0.0
-- (checked bit-exact against Python floats); the raw variant re-serialises -0.0 as the integer
-- -0 and would lose it.

CREATE TABLE IF NOT EXISTS {database}.system_metrics
(
    project  LowCardinality(String),
    run_id   String,
    name     LowCardinality(String),
    ts       DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    value    Float64 CODEC(Gorilla, ZSTD(1)),
    seq      UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project, run_id, name, ts)
-- A sink batch retried with the same deduplication token must not land twice here either; the
-- window has to be on every table a materialized view writes to, not only on `events`.
SETTINGS non_replicated_deduplication_window = 1000;

-- The inner SELECT filters before ARRAY JOIN: otherwise the metrics of every metrics_logged
-- body would be parsed too, on the sink's insert path.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.system_metrics_mv TO {database}.system_metrics
AS SELECT project, run_id, kv.1 AS name, ts, kv.2 AS value, seq
FROM
(
    SELECT project, run_id, ts, seq, body
    FROM {database}.events
    WHERE type = 'system_metrics'
)
ARRAY JOIN JSONExtractKeysAndValues(body, 'metrics', 'Float64') AS kv;

-- Backfill what `events` held before the view existed. The view sees only new inserts, and a
-- run's events are inserted in seq order, so the rows still missing for a run are exactly those
-- below the smallest seq the view wrote for it; running this again adds nothing.
INSERT INTO {database}.system_metrics (project, run_id, name, ts, value, seq)
SELECT e.project, e.run_id, kv.1, e.ts, kv.2, e.seq
FROM
(
    SELECT project, run_id, ts, seq, body
    FROM {database}.events
    WHERE type = 'system_metrics'
) AS e
LEFT JOIN
(
    SELECT project, run_id, min(seq) AS seen_from
    FROM {database}.system_metrics
    GROUP BY project, run_id
) AS s ON e.project = s.project AND e.run_id = s.run_id
ARRAY JOIN JSONExtractKeysAndValues(e.body, 'metrics', 'Float64') AS kv
WHERE s.seen_from IS NULL OR e.seq < s.seen_from
SETTINGS join_use_nulls = 1;
