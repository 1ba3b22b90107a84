-- Per run and metric: last value (by step), min, max, mean, count and the steps where the min
-- and max were reached, kept up to date from `metrics` inserts; read run_summaries_current.
--
-- NaN points are counted (count, nan_count) but left out of min, max and mean: a diverging
-- step must stay visible, not become the "minimum". +-inf take part like any value. Ties go to
-- the earliest step, so step_of_min/step_of_max do not depend on the order parts merge in.
--
-- The argMin/argMax keys are packed into one 128-bit integer instead of tuples like
-- (step, seq) or (value, step): the tuple comparison made this view 4x slower, on the sink's
-- insert path. The packing keeps the tuple order exactly:
--   last:        step << 64 | seq                        (Int128)
--   step_of_min: ord(value) << 64 | ord(step)            (UInt128), lowest wins
--   step_of_max: ord(value) << 64 | ~ord(step)           (UInt128), highest wins: earliest step
-- where ord() maps a Float64 or Int64 to a UInt64 of the same order: flip the sign bit of a
-- non-negative number, all bits of a negative float (so -0.0 and 0.0 tie, like in SQL).

CREATE TABLE IF NOT EXISTS {database}.run_summaries
(
    project      LowCardinality(String),
    run_id       String,
    name         LowCardinality(String),
    count        SimpleAggregateFunction(sum, UInt64),
    nan_count    SimpleAggregateFunction(sum, UInt64),
    first_step   SimpleAggregateFunction(min, Int64),
    last_step    SimpleAggregateFunction(max, Int64),
    last_ts      SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    first_seq    SimpleAggregateFunction(min, UInt64),
    min          SimpleAggregateFunction(min, Nullable(Float64)),
    max          SimpleAggregateFunction(max, Nullable(Float64)),
    last         AggregateFunction(argMax, Float64, Int128),
    step_of_min  AggregateFunction(argMin, Int64, UInt128),
    step_of_max  AggregateFunction(argMax, Int64, UInt128),
    mean         AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, run_id, name)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.run_summaries_mv TO {database}.run_summaries
AS SELECT
    project,
    run_id,
    name,
    count() AS count,
    countIf(isNaN(value)) AS nan_count,
    min(step) AS first_step,
    max(step) AS last_step,
    max(ts) AS last_ts,
    min(seq) AS first_seq,
    min(if(isNaN(value), NULL, value)) AS min,
    max(if(isNaN(value), NULL, value)) AS max,
    argMaxState(value, bitShiftLeft(toInt128(step), 64) + toInt128(seq)) AS last,
    argMinStateIf(step, bitOr(bitShiftLeft(toUInt128(ord_value), 64), toUInt128(ord_step)), NOT isNaN(value))
        AS step_of_min,
    argMaxStateIf(step, bitOr(bitShiftLeft(toUInt128(ord_value), 64), toUInt128(bitNot(ord_step))), NOT isNaN(value))
        AS step_of_max,
    avgStateIf(value, NOT isNaN(value)) AS mean
FROM
(
    SELECT
        project,
        run_id,
        name,
        step,
        value,
        ts,
        seq,
        if(
            value >= 0,
            bitOr(reinterpretAsUInt64(value), 9223372036854775808),
            bitNot(reinterpretAsUInt64(value))
        ) AS ord_value,
        bitXor(reinterpretAsUInt64(step), 9223372036854775808) AS ord_step
    FROM {database}.metrics
)
GROUP BY project, run_id, name;

-- Backfill the points stored before the view existed. count and mean are sums, so no point may
-- be folded in twice: a run's points arrive in seq order, hence the ones the view has not seen
-- are those below the smallest seq it wrote for that run and metric. Running this again (a crash
-- before the migration was recorded) adds nothing.
INSERT INTO {database}.run_summaries
SELECT
    m.project,
    m.run_id,
    m.name,
    count(),
    countIf(isNaN(m.value)),
    min(m.step),
    max(m.step),
    max(m.ts),
    min(m.seq),
    min(if(isNaN(m.value), NULL, m.value)),
    max(if(isNaN(m.value), NULL, m.value)),
    argMaxState(m.value, bitShiftLeft(toInt128(m.step), 64) + toInt128(m.seq)),
    argMinStateIf(
        m.step, bitOr(bitShiftLeft(toUInt128(m.ord_value), 64), toUInt128(m.ord_step)), NOT isNaN(m.value)
    ),
    argMaxStateIf(
        m.step,
        bitOr(bitShiftLeft(toUInt128(m.ord_value), 64), toUInt128(bitNot(m.ord_step))),
        NOT isNaN(m.value)
    ),
    avgStateIf(m.value, NOT isNaN(m.value))
FROM
(
    SELECT
        project,
        run_id,
        name,
        step,
        value,
        ts,
        seq,
        if(
            value >= 0,
            bitOr(reinterpretAsUInt64(value), 9223372036854775808),
            bitNot(reinterpretAsUInt64(value))
        ) AS ord_value,
        bitXor(reinterpretAsUInt64(step), 9223372036854775808) AS ord_step
    FROM {database}.metrics
) AS m
LEFT JOIN
(
    SELECT project, run_id, name, min(first_seq) AS seen_from
    FROM {database}.run_summaries
    GROUP BY project, run_id, name
) AS s ON m.project = s.project AND m.run_id = s.run_id AND m.name = s.name
WHERE s.seen_from IS NULL OR m.seq < s.seen_from
GROUP BY m.project, m.run_id, m.name
SETTINGS join_use_nulls = 1;

CREATE VIEW IF NOT EXISTS {database}.run_summaries_current AS
SELECT
    project,
    run_id,
    name,
    argMaxMerge(s.last) AS last,
    min(s.min) AS min,
    max(s.max) AS max,
    avgMerge(s.mean) AS mean,
    sum(s.count) AS count,
    sum(s.nan_count) AS nan_count,
    if(min IS NULL, NULL, argMinMerge(s.step_of_min)) AS step_of_min,
    if(max IS NULL, NULL, argMaxMerge(s.step_of_max)) AS step_of_max,
    min(s.first_step) AS first_step,
    max(s.last_step) AS last_step,
    max(s.last_ts) AS last_ts
FROM {database}.run_summaries AS s
GROUP BY project, run_id, name;
