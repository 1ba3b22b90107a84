-- From here on ClickHouse fans metric points out of `events` itself: the sink inserts each event
-- once (as the JSON the producer sent) and this view writes one `metrics` row per point, in the
-- same INSERT and under the same deduplication token. Before, the sink wrote both tables; the
-- points it wrote stay where they are, so there is nothing to backfill.
--
-- Upgrading: stop every sink of the old version before the first new one starts (a new sink
-- applies this migration), or old sinks would write their points a second time.
--
-- Values as in system_metrics: 'Float64' extraction reads "NaN", "Infinity" and "-Infinity"
-- and keeps -0.0; JSON integers of any size read as Python's float() reads them.

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.metrics_mv TO {database}.metrics
AS SELECT project, run_id, kv.1 AS name, step, kv.2 AS value, ts, seq
FROM
(
    SELECT project, run_id, ts, seq, body, JSONExtractInt(body, 'step') AS step
    FROM {database}.events
    WHERE type = 'metrics_logged'
)
ARRAY JOIN JSONExtractKeysAndValues(body, 'metrics', 'Float64') AS kv;
