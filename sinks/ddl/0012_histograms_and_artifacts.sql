-- Histograms (`histogram_logged`, from runstream.Histogram and run.watch) and artifacts
-- (`artifact_logged`) as tables of their own, derived from `events` by materialized views in
-- the sink's INSERT, as metrics are (0007): the sink stays unaware.
--
-- One `histograms` row per histogram of an event: `bins` are the len(counts) + 1 edges,
-- ascending; `counts` are read as Float64 (the producer writes integers for integer counts;
-- np_histogram may give fractional ones). histogram_logged is a new event type: no event of it
-- can be in `events` before this migration (an older sink dead-letters it), so there is nothing
-- to backfill.

CREATE TABLE IF NOT EXISTS {database}.histograms
(
    project  LowCardinality(String),
    run_id   String,
    name     LowCardinality(String),
    step     Int64 CODEC(Delta, ZSTD(1)),
    bins     Array(Float64) CODEC(ZSTD(3)),
    counts   Array(Float64) CODEC(ZSTD(3)),
    ts       DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    seq      UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project, run_id, name, step)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.histograms_mv TO {database}.histograms
AS SELECT
    project,
    run_id,
    kv.1 AS name,
    step,
    JSONExtract(kv.2, 'bins', 'Array(Float64)') AS bins,
    JSONExtract(kv.2, 'counts', 'Array(Float64)') AS counts,
    ts,
    seq
FROM
(
    SELECT project, run_id, ts, seq, body, JSONExtractInt(body, 'step') AS step
    FROM {database}.events
    WHERE type = 'histogram_logged'
)
ARRAY JOIN JSONExtractKeysAndValuesRaw(body, 'histograms') AS kv;

-- One row per artifact_logged event. The fields added in 0.2 are optional in the event and
-- read as empty here when absent: aliases [], metadata '{}', description '', files [],
-- file_count (the manifest's length; NULL for a single file logged by path), use 0.
CREATE TABLE IF NOT EXISTS {database}.artifacts
(
    project      LowCardinality(String),
    run_id       String,
    name         String,
    type         LowCardinality(String),
    digest       String,
    size         UInt64,
    uri          String,
    aliases      Array(String),
    metadata     String CODEC(ZSTD(3)),
    description  String,
    files        Array(Tuple(path String, digest String, size UInt64, ref String)) CODEC(ZSTD(3)),
    file_count   Nullable(UInt64),
    use          UInt8,
    ts           DateTime64(6, 'UTC'),
    seq          UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project, run_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.artifacts_mv TO {database}.artifacts
AS SELECT
    project,
    run_id,
    JSONExtractString(body, 'name') AS name,
    JSONExtractString(body, 'type') AS type,
    JSONExtractString(body, 'digest') AS digest,
    JSONExtractUInt(body, 'size') AS size,
    JSONExtractString(body, 'uri') AS uri,
    JSONExtract(body, 'aliases', 'Array(String)') AS aliases,
    if(JSONHas(body, 'metadata'), JSONExtractRaw(body, 'metadata'), '{}') AS metadata,
    JSONExtractString(body, 'description') AS description,
    arrayMap(
        f -> (JSONExtractString(f, 'path'), JSONExtractString(f, 'digest'),
              JSONExtractUInt(f, 'size'), JSONExtractString(f, 'ref')),
        JSONExtractArrayRaw(body, 'files')
    ) AS files,
    JSONExtract(body, 'file_count', 'Nullable(UInt64)') AS file_count,
    toUInt8(JSONExtractBool(body, 'use')) AS use,
    ts,
    seq
FROM
(
    -- Filtered here: in the outer SELECT the alias `type` (the artifact's) would shadow the
    -- event's type column.
    SELECT project, run_id, ts, seq, body
    FROM {database}.events
    WHERE type = 'artifact_logged'
);

-- Backfill the artifacts `events` held before the view existed (as 0002 does): the rows still
-- missing for a run are those below the smallest seq the view wrote for it.
INSERT INTO {database}.artifacts
SELECT
    e.project,
    e.run_id,
    JSONExtractString(e.body, 'name'),
    JSONExtractString(e.body, 'type'),
    JSONExtractString(e.body, 'digest'),
    JSONExtractUInt(e.body, 'size'),
    JSONExtractString(e.body, 'uri'),
    JSONExtract(e.body, 'aliases', 'Array(String)'),
    if(JSONHas(e.body, 'metadata'), JSONExtractRaw(e.body, 'metadata'), '{}'),
    JSONExtractString(e.body, 'description'),
    arrayMap(
        f -> (JSONExtractString(f, 'path'), JSONExtractString(f, 'digest'),
              JSONExtractUInt(f, 'size'), JSONExtractString(f, 'ref')),
        JSONExtractArrayRaw(e.body, 'files')
    ),
    JSONExtract(e.body, 'file_count', 'Nullable(UInt64)'),
    toUInt8(JSONExtractBool(e.body, 'use')),
    e.ts,
    e.seq
FROM
(
    SELECT project, run_id, ts, seq, body
    FROM {database}.events
    WHERE type = 'artifact_logged'
) AS e
LEFT JOIN
(
    SELECT project, run_id, min(seq) AS seen_from
    FROM {database}.artifacts
    GROUP BY project, run_id
) AS s ON e.project = s.project AND e.run_id = s.run_id
WHERE s.seen_from IS NULL OR e.seq < s.seen_from
SETTINGS join_use_nulls = 1;
