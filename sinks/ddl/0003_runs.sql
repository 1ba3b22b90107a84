-- The current state of every run, derived from `events`.
--
-- An AggregatingMergeTree holds partial states per insert; the view runs_current merges them, so
-- a reader gets one finished row per run without knowing about FINAL or -Merge functions.
-- Every state here is order-independent and idempotent (argMax by seq, min, max, uniq arrays):
-- whichever order parts merge in, and even if a row were counted twice (the backfill below racing
-- the view), the result is the same. "Latest" always means highest seq, never highest ts: seq is
-- the producer's gap-free order, ts depends on clocks.
--
-- Status: run_started and run_resumed set 'running', run_finished sets its body's status. A
-- heartbeat does not reopen a finished run (only run_resumed does); a run with no lifecycle event
-- at all (its run_started not delivered yet) reads as 'running'.

CREATE TABLE IF NOT EXISTS {database}.runs
(
    project          LowCardinality(String),
    run_id           String,
    name             AggregateFunction(argMax, String, UInt64),
    status           AggregateFunction(argMax, String, UInt64),
    exit_code        AggregateFunction(argMax, Int64, UInt64),
    finished_at      AggregateFunction(argMax, DateTime64(6, 'UTC'), UInt64),
    config           AggregateFunction(argMax, String, UInt64),
    config_seq       SimpleAggregateFunction(max, Nullable(UInt64)),
    config_patches   AggregateFunction(groupUniqArray, Tuple(UInt64, String)),
    summary_patches  AggregateFunction(groupUniqArray, Tuple(UInt64, String)),
    tags             AggregateFunction(argMax, Array(String), UInt64),
    `group`          AggregateFunction(argMax, String, UInt64),
    job_type         AggregateFunction(argMax, String, UInt64),
    notes            AggregateFunction(argMax, String, UInt64),
    environment      AggregateFunction(argMax, String, UInt64),
    started_at       SimpleAggregateFunction(min, Nullable(DateTime64(6, 'UTC'))),
    first_event_at   SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_event_at    SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    last_heartbeat   SimpleAggregateFunction(max, Nullable(DateTime64(6, 'UTC'))),
    last_step        SimpleAggregateFunction(max, Nullable(Int64)),
    last_seq         SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, run_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The inner SELECT parses a body only for the event types a field comes from: if() evaluates
-- its branch for matching rows only, which halves the view's cost on the sink's insert path
-- (most events are metrics_logged). last_step comes from metrics_logged and heartbeat only:
-- run_resumed carries the step the run continues FROM, one past the last one logged.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.runs_mv TO {database}.runs
AS SELECT
    project,
    run_id,
    argMaxStateIf(e_name, seq, type = 'run_started') AS name,
    argMaxStateIf(e_status, seq, type IN ('run_started', 'run_resumed', 'run_finished')) AS status,
    argMaxStateIf(e_exit_code, seq, type = 'run_finished') AS exit_code,
    argMaxStateIf(ts, seq, type = 'run_finished') AS finished_at,
    argMaxStateIf(e_config, seq, type = 'run_started') AS config,
    max(if(type = 'run_started', seq, NULL)) AS config_seq,
    groupUniqArrayStateIf((seq, e_config), type = 'config_updated') AS config_patches,
    groupUniqArrayStateIf((seq, e_summary), type = 'summary_updated') AS summary_patches,
    argMaxStateIf(e_tags, seq, type IN ('run_started', 'tags_updated')) AS tags,
    argMaxStateIf(e_group, seq, type = 'run_started') AS `group`,
    argMaxStateIf(e_job_type, seq, type = 'run_started') AS job_type,
    argMaxStateIf(e_notes, seq, type = 'run_started') AS notes,
    argMaxStateIf(e_environment, seq, type = 'run_started') AS environment,
    min(if(type = 'run_started', ts, NULL)) AS started_at,
    min(ts) AS first_event_at,
    max(ts) AS last_event_at,
    max(if(type = 'heartbeat', ts, NULL)) AS last_heartbeat,
    max(e_step) AS last_step,
    max(seq) AS last_seq
FROM
(
    SELECT
        project,
        run_id,
        type,
        seq,
        ts,
        if(type = 'run_started', JSONExtractString(body, 'name'), '') AS e_name,
        if(type = 'run_finished', JSONExtractString(body, 'status'), 'running') AS e_status,
        if(type = 'run_finished', JSONExtractInt(body, 'exit_code'), 0) AS e_exit_code,
        if(type IN ('run_started', 'config_updated'), JSONExtractRaw(body, 'config'), '') AS e_config,
        if(type = 'summary_updated', JSONExtractRaw(body, 'summary'), '') AS e_summary,
        if(
            type IN ('run_started', 'tags_updated'),
            JSONExtract(body, 'tags', 'Array(String)'),
            CAST([], 'Array(String)')
        ) AS e_tags,
        if(type = 'run_started', JSONExtractString(body, 'group'), '') AS e_group,
        if(type = 'run_started', JSONExtractString(body, 'job_type'), '') AS e_job_type,
        if(type = 'run_started', JSONExtractString(body, 'notes'), '') AS e_notes,
        if(type = 'run_started', JSONExtractRaw(body, 'environment'), '') AS e_environment,
        if(
            type IN ('metrics_logged', 'heartbeat'), JSONExtract(body, 'step', 'Nullable(Int64)'), NULL
        ) AS e_step
    FROM {database}.events
)
GROUP BY project, run_id;

-- Backfill: every state above is idempotent, so folding in all of `events` again is harmless,
-- also for rows the view has already seen.
INSERT INTO {database}.runs
SELECT
    project,
    run_id,
    argMaxStateIf(e_name, seq, type = 'run_started'),
    argMaxStateIf(e_status, seq, type IN ('run_started', 'run_resumed', 'run_finished')),
    argMaxStateIf(e_exit_code, seq, type = 'run_finished'),
    argMaxStateIf(ts, seq, type = 'run_finished'),
    argMaxStateIf(e_config, seq, type = 'run_started'),
    max(if(type = 'run_started', seq, NULL)),
    groupUniqArrayStateIf((seq, e_config), type = 'config_updated'),
    groupUniqArrayStateIf((seq, e_summary), type = 'summary_updated'),
    argMaxStateIf(e_tags, seq, type IN ('run_started', 'tags_updated')),
    argMaxStateIf(e_group, seq, type = 'run_started'),
    argMaxStateIf(e_job_type, seq, type = 'run_started'),
    argMaxStateIf(e_notes, seq, type = 'run_started'),
    argMaxStateIf(e_environment, seq, type = 'run_started'),
    min(if(type = 'run_started', ts, NULL)),
    min(ts),
    max(ts),
    max(if(type = 'heartbeat', ts, NULL)),
    max(e_step),
    max(seq)
FROM
(
    SELECT
        project,
        run_id,
        type,
        seq,
        ts,
        if(type = 'run_started', JSONExtractString(body, 'name'), '') AS e_name,
        if(type = 'run_finished', JSONExtractString(body, 'status'), 'running') AS e_status,
        if(type = 'run_finished', JSONExtractInt(body, 'exit_code'), 0) AS e_exit_code,
        if(type IN ('run_started', 'config_updated'), JSONExtractRaw(body, 'config'), '') AS e_config,
        if(type = 'summary_updated', JSONExtractRaw(body, 'summary'), '') AS e_summary,
        if(
            type IN ('run_started', 'tags_updated'),
            JSONExtract(body, 'tags', 'Array(String)'),
            CAST([], 'Array(String)')
        ) AS e_tags,
        if(type = 'run_started', JSONExtractString(body, 'group'), '') AS e_group,
        if(type = 'run_started', JSONExtractString(body, 'job_type'), '') AS e_job_type,
        if(type = 'run_started', JSONExtractString(body, 'notes'), '') AS e_notes,
        if(type = 'run_started', JSONExtractRaw(body, 'environment'), '') AS e_environment,
        if(
            type IN ('metrics_logged', 'heartbeat'), JSONExtract(body, 'step', 'Nullable(Int64)'), NULL
        ) AS e_step
    FROM {database}.events
)
GROUP BY project, run_id;

-- Config and user summary: the latest run_started config, then every config_updated after it
-- in seq order. A patch replaces whole top-level keys and a null removes the key, which is what
-- the Python SDK's run.config does (nested objects are replaced, not merged recursively).
-- The fold works on Map(key, raw JSON value); '' marks a key to drop, as raw JSON is never empty.
CREATE VIEW IF NOT EXISTS {database}.runs_current AS
SELECT
    project,
    run_id,
    if(m_name = '', run_id, m_name) AS name,
    if(m_status = '', 'running', m_status) AS status,
    if(m_status IN ('', 'running'), NULL, m_exit_code) AS exit_code,
    m_group AS `group`,
    m_job_type AS job_type,
    m_tags AS tags,
    concat(
        '{',
        arrayStringConcat(
            arrayMap((k, v) -> concat(toJSONString(k), ':', v), mapKeys(config_map), mapValues(config_map)),
            ','
        ),
        '}'
    ) AS config,
    concat(
        '{',
        arrayStringConcat(
            arrayMap((k, v) -> concat(toJSONString(k), ':', v), mapKeys(summary_map), mapValues(summary_map)),
            ','
        ),
        '}'
    ) AS summary,
    coalesce(m_started_at, m_first_event_at) AS started_at,
    if(m_status IN ('', 'running'), NULL, m_finished_at) AS finished_at,
    m_last_event_at AS last_event_at,
    m_last_heartbeat AS last_heartbeat,
    m_last_step AS last_step,
    m_last_seq AS last_seq,
    m_notes AS notes,
    m_environment AS environment
FROM
(
    SELECT
        project,
        run_id,
        argMaxMerge(r.name) AS m_name,
        argMaxMerge(r.status) AS m_status,
        argMaxMerge(r.exit_code) AS m_exit_code,
        argMaxMerge(r.finished_at) AS m_finished_at,
        argMaxMerge(r.tags) AS m_tags,
        argMaxMerge(r.`group`) AS m_group,
        argMaxMerge(r.job_type) AS m_job_type,
        argMaxMerge(r.notes) AS m_notes,
        argMaxMerge(r.environment) AS m_environment,
        min(r.started_at) AS m_started_at,
        min(r.first_event_at) AS m_first_event_at,
        max(r.last_event_at) AS m_last_event_at,
        max(r.last_heartbeat) AS m_last_heartbeat,
        max(r.last_step) AS m_last_step,
        max(r.last_seq) AS m_last_seq,
        max(r.config_seq) AS base_seq,
        arrayFold(
            (acc, patch) -> mapFilter(
                (k, v) -> v != '',
                mapUpdate(
                    acc,
                    mapApply(
                        (k, v) -> (k, if(v = 'null', '', v)),
                        CAST(JSONExtractKeysAndValuesRaw(patch.2), 'Map(String, String)')
                    )
                )
            ),
            arraySort(
                p -> p.1,
                arrayFilter(p -> base_seq IS NULL OR p.1 > base_seq, groupUniqArrayMerge(r.config_patches))
            ),
            CAST(JSONExtractKeysAndValuesRaw(argMaxMerge(r.config)), 'Map(String, String)')
        ) AS config_map,
        arrayFold(
            (acc, patch) -> mapFilter(
                (k, v) -> v != '',
                mapUpdate(
                    acc,
                    mapApply(
                        (k, v) -> (k, if(v = 'null', '', v)),
                        CAST(JSONExtractKeysAndValuesRaw(patch.2), 'Map(String, String)')
                    )
                )
            ),
            arraySort(p -> p.1, groupUniqArrayMerge(r.summary_patches)),
            CAST(map(), 'Map(String, String)')
        ) AS summary_map
    FROM {database}.runs AS r
    GROUP BY project, run_id
);
