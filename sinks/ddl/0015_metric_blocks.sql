-- Per run, metric and block of 1,024 steps: the last value (by step, then seq), the finite min
-- and max, the highest step, seq and time; kept up to date from `metrics` inserts. A chart of a
-- long metric reads these instead of every point: 10 million points are about 10,000 blocks
-- (runstream.read.run, "samples" of long metrics; docs/sql.md, "metric_blocks").
--
-- block = floor(step / 1024) (intDiv truncates toward zero: negative steps are moved down
-- first, so that every block holds exactly the steps block*1024 .. block*1024 + 1023). NaN
-- points take part in `last` only, as in run_summaries (0004) and the downsample buckets; the
-- key of `last` is the same packed (step << 64 | seq).
--
-- Every column is a min, a max or an argMax: folding a point in twice changes nothing, so the
-- backfill below may overlap the view (a point the view also saw) and may run again.

CREATE TABLE IF NOT EXISTS {database}.metric_blocks
(
    project   LowCardinality(String),
    run_id    String,
    name      LowCardinality(String),
    block     Int64,
    last_step SimpleAggregateFunction(max, Int64),
    last_ts   SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    last_seq  SimpleAggregateFunction(max, UInt64),
    min       SimpleAggregateFunction(min, Nullable(Float64)),
    max       SimpleAggregateFunction(max, Nullable(Float64)),
    last      AggregateFunction(argMax, Float64, Int128)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, run_id, name, block)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.metric_blocks_mv TO {database}.metric_blocks
AS SELECT
    project,
    run_id,
    name,
    intDiv(step - if(step < 0, 1023, 0), 1024) AS block,
    max(step) AS last_step,
    max(ts) AS last_ts,
    max(seq) AS last_seq,
    min(if(isNaN(value), NULL, value)) AS min,
    max(if(isNaN(value), NULL, value)) AS max,
    argMaxState(value, bitShiftLeft(toInt128(step), 64) + toInt128(seq)) AS last
FROM {database}.metrics
GROUP BY project, run_id, name, block;

-- The points stored before the view existed (and, harmlessly, any the view saw meanwhile).
INSERT INTO {database}.metric_blocks
SELECT
    project,
    run_id,
    name,
    intDiv(step - if(step < 0, 1023, 0), 1024) AS block,
    max(step) AS last_step,
    max(ts) AS last_ts,
    max(seq) AS last_seq,
    min(if(isNaN(value), NULL, value)) AS min,
    max(if(isNaN(value), NULL, value)) AS max,
    argMaxState(value, bitShiftLeft(toInt128(step), 64) + toInt128(seq)) AS last
FROM {database}.metrics
GROUP BY project, run_id, name, block;
