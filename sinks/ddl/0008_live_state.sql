-- What the stream processors hold, as they publish it on the compacted runs and summaries
-- topics: the sink writes every version, ReplacingMergeTree keeps the latest per key (highest
-- `version`, which counts the events folded in, so a replay writes the same versions again),
-- and the *_current views read with FINAL. Next to `runs_current` and `run_summaries_current`
-- (derived from `events` inside ClickHouse) these add what only a live process can know: a run
-- that went silent is `crashed`, and summaries follow `define_metric` choices.

CREATE TABLE IF NOT EXISTS {database}.live_runs
(
    project         LowCardinality(String),
    run_id          String,
    name            Nullable(String),
    status          LowCardinality(String),
    started_at      Nullable(DateTime64(6, 'UTC')),
    ended_at        Nullable(DateTime64(6, 'UTC')),
    last_event_at   Nullable(DateTime64(6, 'UTC')),
    last_heartbeat  Nullable(DateTime64(6, 'UTC')),
    last_step       Nullable(Int64),
    last_step_at    Nullable(DateTime64(6, 'UTC')),
    config          String,
    tags            Array(String),
    `group`         Nullable(String),
    job_type        Nullable(String),
    exit_code       Nullable(Int64),
    last_seq        Int64,
    version         UInt64,
    updated_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, run_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {database}.live_summaries
(
    project       LowCardinality(String),
    run_id        String,
    name          LowCardinality(String),
    count         UInt64,
    nan_count     UInt64,
    first_step    Nullable(Int64),
    last_step     Nullable(Int64),
    last          Nullable(Float64),
    min           Nullable(Float64),
    step_of_min   Nullable(Int64),
    max           Nullable(Float64),
    step_of_max   Nullable(Int64),
    mean          Nullable(Float64),
    summary       LowCardinality(String),
    value         Nullable(Float64),
    last_seq      Int64,
    version       UInt64,
    updated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, run_id, name)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS {database}.live_runs_current AS
SELECT * EXCEPT (version, updated_at) FROM {database}.live_runs FINAL;

CREATE VIEW IF NOT EXISTS {database}.live_summaries_current AS
SELECT * EXCEPT (version, updated_at) FROM {database}.live_summaries FINAL;
