-- The immutable event log and the long table of metric points.
-- Both keep a deduplication window so that a batch retried with the same
-- insert_deduplication_token lands once (plain MergeTree keeps none by default).

CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id          UUID,
    schema_version    UInt16,
    type              LowCardinality(String),
    project           LowCardinality(String),
    run_id            String,
    seq               UInt64,
    ts                DateTime64(6, 'UTC'),
    producer_sdk      LowCardinality(String),
    producer_version  LowCardinality(String),
    producer_host     LowCardinality(String),
    producer_pid      UInt32,
    body              String CODEC(ZSTD(3)),
    kafka_partition   UInt32,
    kafka_offset      UInt64,
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project, run_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.metrics
(
    project  LowCardinality(String),
    run_id   String,
    name     LowCardinality(String),
    step     Int64 CODEC(Delta, ZSTD(1)),
    value    Float64 CODEC(Gorilla, ZSTD(1)),
    ts       DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    seq      UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project, run_id, name, step)
SETTINGS non_replicated_deduplication_window = 1000;
