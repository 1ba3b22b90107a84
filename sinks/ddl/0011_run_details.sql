-- Details of a run that change after it started, and what define_metric says about a metric.
--
-- run_updates: one row per run_updated event (run.name = ..., run.notes = ...). has_name /
--   has_notes say which of the two the event carries (an absent field leaves it unchanged).
-- metric_definitions: one row per metric_defined event, every field of the body: summary ('' =
--   this definition chose none), step_metric ('' = none), step_sync, goal ('' = none), hidden.
-- metric_definitions_current: per run and metric name (or prefix pattern 'val/*'), the latest
--   value of each field some definition gave (by seq): a later define_metric("loss",
--   goal="minimize") does not forget an earlier step_metric of "loss".
-- runs_current is replaced (same columns): `name` and `notes` are the latest of run_started and
--   run_updated (by seq); a metric_defined without a summary chooses no summary kind.
-- Both tables are fed by views reading only their event type, so metrics_logged inserts pay
-- nothing; a backfill adds the events stored before the views existed (rows below the smallest
-- seq the view wrote for a run, as in 0009).

CREATE TABLE IF NOT EXISTS {database}.run_updates
(
    project    LowCardinality(String),
    run_id     String,
    seq        UInt64,
    ts         DateTime64(6, 'UTC'),
    has_name   UInt8,
    name       String,
    has_notes  UInt8,
    notes      String
)
ENGINE = MergeTree
ORDER BY (project, run_id, seq)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.run_updates_mv TO {database}.run_updates
AS SELECT
    project,
    run_id,
    seq,
    ts,
    toUInt8(JSONHas(body, 'name') AND JSONType(body, 'name') = 'String') AS has_name,
    JSONExtractString(body, 'name') AS name,
    toUInt8(JSONHas(body, 'notes') AND JSONType(body, 'notes') = 'String') AS has_notes,
    JSONExtractString(body, 'notes') AS notes
FROM {database}.events
WHERE type = 'run_updated';

INSERT INTO {database}.run_updates (project, run_id, seq, ts, has_name, name, has_notes, notes)
SELECT
    e.project,
    e.run_id,
    e.seq,
    e.ts,
    toUInt8(JSONHas(e.body, 'name') AND JSONType(e.body, 'name') = 'String'),
    JSONExtractString(e.body, 'name'),
    toUInt8(JSONHas(e.body, 'notes') AND JSONType(e.body, 'notes') = 'String'),
    JSONExtractString(e.body, 'notes')
FROM {database}.events AS e
LEFT JOIN
(
    SELECT project, run_id, min(seq) AS seen_from
    FROM {database}.run_updates
    GROUP BY project, run_id
) AS s ON e.project = s.project AND e.run_id = s.run_id
WHERE e.type = 'run_updated' AND (s.seen_from IS NULL OR e.seq < s.seen_from)
SETTINGS join_use_nulls = 1;

CREATE TABLE IF NOT EXISTS {database}.metric_definitions
(
    project      LowCardinality(String),
    run_id       String,
    name         String,
    seq          UInt64,
    ts           DateTime64(6, 'UTC'),
    summary      LowCardinality(String),
    step_metric  String,
    step_sync    Nullable(Bool),
    goal         LowCardinality(String),
    hidden       Nullable(Bool)
)
ENGINE = MergeTree
ORDER BY (project, run_id, name, seq)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.metric_definitions_mv TO {database}.metric_definitions
AS SELECT
    project,
    run_id,
    JSONExtractString(body, 'name') AS name,
    seq,
    ts,
    JSONExtractString(body, 'summary') AS summary,
    JSONExtractString(body, 'step_metric') AS step_metric,
    JSONExtract(body, 'step_sync', 'Nullable(Bool)') AS step_sync,
    JSONExtractString(body, 'goal') AS goal,
    JSONExtract(body, 'hidden', 'Nullable(Bool)') AS hidden
FROM {database}.events
WHERE type = 'metric_defined';

INSERT INTO {database}.metric_definitions
    (project, run_id, name, seq, ts, summary, step_metric, step_sync, goal, hidden)
SELECT
    e.project,
    e.run_id,
    JSONExtractString(e.body, 'name'),
    e.seq,
    e.ts,
    JSONExtractString(e.body, 'summary'),
    JSONExtractString(e.body, 'step_metric'),
    JSONExtract(e.body, 'step_sync', 'Nullable(Bool)'),
    JSONExtractString(e.body, 'goal'),
    JSONExtract(e.body, 'hidden', 'Nullable(Bool)')
FROM {database}.events AS e
LEFT JOIN
(
    SELECT project, run_id, min(seq) AS seen_from
    FROM {database}.metric_definitions
    GROUP BY project, run_id
) AS s ON e.project = s.project AND e.run_id = s.run_id
WHERE e.type = 'metric_defined' AND (s.seen_from IS NULL OR e.seq < s.seen_from)
SETTINGS join_use_nulls = 1;

CREATE OR REPLACE VIEW {database}.metric_definitions_current AS
SELECT
    project,
    run_id,
    name,
    argMaxIf(summary, seq, summary != '') AS summary,
    argMaxIf(step_metric, seq, step_metric != '') AS step_metric,
    argMaxIf(step_sync, seq, step_sync IS NOT NULL) AS step_sync,
    argMaxIf(goal, seq, goal != '') AS goal,
    argMaxIf(hidden, seq, hidden IS NOT NULL) AS hidden,
    min(ts) AS defined_at,
    max(seq) AS last_seq
FROM {database}.metric_definitions
GROUP BY project, run_id, name;

-- runs_current as in 0009, with two changes: name and notes are the latest of run_started and
-- run_updated by seq (a run renamed with run.name = ... shows its new name; a later run_started
-- of the same run id wins again), and metric_defined rows without a summary (define_metric with
-- only step_metric, goal or hidden) choose no summary kind: they are left out of the choice.
CREATE OR REPLACE VIEW {database}.runs_current AS
SELECT
    r.project AS project,
    r.run_id AS run_id,
    multiIf(
        u.u_has_name AND (r.m_started_seq IS NULL OR u.u_name_seq > r.m_started_seq), u.u_name,
        r.m_name = '', r.run_id,
        r.m_name
    ) AS name,
    if(r.m_status = '', 'running', r.m_status) AS status,
    if(r.m_status IN ('', 'running'), NULL, r.m_exit_code) AS exit_code,
    r.m_group AS `group`,
    r.m_job_type AS job_type,
    r.m_tags AS tags,
    if(c.config = '', '{}', c.config) AS config,
    if(s.summary = '', '{}', s.summary) AS summary,
    coalesce(r.m_started_at, r.m_first_event_at) AS started_at,
    if(r.m_status IN ('', 'running'), NULL, r.m_finished_at) AS finished_at,
    r.m_last_event_at AS last_event_at,
    r.m_last_heartbeat AS last_heartbeat,
    r.m_last_step AS last_step,
    r.m_last_seq AS last_seq,
    if(u.u_has_notes AND (r.m_started_seq IS NULL OR u.u_notes_seq > r.m_started_seq), u.u_notes, r.m_notes) AS notes,
    env.environment AS environment
FROM
(
    SELECT
        project,
        run_id,
        argMaxMerge(name) AS m_name,
        argMaxMerge(status) AS m_status,
        argMaxMerge(exit_code) AS m_exit_code,
        argMaxMerge(finished_at) AS m_finished_at,
        argMaxMerge(tags) AS m_tags,
        argMaxMerge(`group`) AS m_group,
        argMaxMerge(job_type) AS m_job_type,
        argMaxMerge(notes) AS m_notes,
        min(started_at) AS m_started_at,
        min(first_event_at) AS m_first_event_at,
        max(last_event_at) AS m_last_event_at,
        max(last_heartbeat) AS m_last_heartbeat,
        max(last_step) AS m_last_step,
        max(last_seq) AS m_last_seq,
        max(config_seq) AS m_started_seq
    FROM {database}.runs
    GROUP BY project, run_id
) AS r
LEFT JOIN
(
    SELECT
        project,
        run_id,
        max(has_name) AS u_has_name,
        argMaxIf(name, seq, has_name = 1) AS u_name,
        maxIf(seq, has_name = 1) AS u_name_seq,
        max(has_notes) AS u_has_notes,
        argMaxIf(notes, seq, has_notes = 1) AS u_notes,
        maxIf(seq, has_notes = 1) AS u_notes_seq
    FROM {database}.run_updates
    GROUP BY project, run_id
) AS u ON u.project = r.project AND u.run_id = r.run_id
LEFT JOIN
(
    -- A key counts from the latest run_started on (its seq is `base`); its latest value wins;
    -- keys keep the place they were first given.
    SELECT
        project,
        run_id,
        concat(
            '{',
            arrayStringConcat(
                arrayMap(
                    k -> concat(toJSONString(k.3), ':', k.4),
                    arraySort(k -> (k.1, k.2), groupArrayIf((k_seq, k_pos, key, k_value), k_value != ''))
                ),
                ','
            ),
            '}'
        ) AS config
    FROM
    (
        SELECT
            f.project AS project,
            f.run_id AS run_id,
            f.key AS key,
            argMax(f.value, (f.seq, f.pos)) AS k_value,
            min(f.seq) AS k_seq,
            argMin(f.pos, f.seq) AS k_pos
        FROM {database}.run_fields AS f
        LEFT JOIN
        (
            SELECT project, run_id, max(seq) AS base
            FROM {database}.run_fields
            WHERE doc = 'run_started'
            GROUP BY project, run_id
        ) AS b ON f.project = b.project AND f.run_id = b.run_id
        WHERE f.doc = 'config' AND f.seq >= b.base
        GROUP BY project, run_id, key
    )
    GROUP BY project, run_id
) AS c ON c.project = r.project AND c.run_id = r.run_id
LEFT JOIN
(
    SELECT project, run_id, argMax(value, seq) AS environment
    FROM {database}.run_fields
    WHERE doc = 'environment'
    GROUP BY project, run_id
) AS env ON env.project = r.project AND env.run_id = r.run_id
LEFT JOIN
(
    SELECT
        project,
        run_id,
        concat(
            '{',
            arrayStringConcat(
                arrayMap(k -> concat(toJSONString(k.1), ':', k.2), arraySort(groupArrayIf((name, text), text != ''))),
                ','
            ),
            '}'
        ) AS summary
    FROM
    (
        SELECT
            project,
            run_id,
            name,
            multiIf(
                is_metric AND has_open, v_open,
                is_metric,
                multiIf(
                    value IS NULL, 'null',
                    isNaN(value), '"NaN"',
                    isInfinite(value), if(value > 0, '"Infinity"', '"-Infinity"'),
                    match(toString(value), '^-?[0-9]+$'), concat(toString(value), '.0'),
                    toString(value)
                ),
                v_all
            ) AS text
        FROM
        (
            SELECT
                m.project AS project,
                m.run_id AS run_id,
                toString(m.name) AS name,
                toUInt8(1) AS is_metric,
                if(
                    has(arrayMap(x -> x.1, d.defs), name),
                    arrayFirst(x -> x.1 = name, d.defs).3,
                    arraySort(
                        x -> x.2,
                        arrayFilter(
                            x -> endsWith(x.1, '*') AND startsWith(name, substring(x.1, 1, length(x.1) - 1)),
                            d.defs
                        )
                    )[1].3
                ) AS kind,
                multiIf(kind = 'min', m.min, kind = 'max', m.max, kind = 'mean', m.mean, m.last) AS value
            FROM {database}.run_summaries_current AS m
            LEFT JOIN
            (
                SELECT project, run_id, groupArray((key, first_seq, kind)) AS defs
                FROM
                (
                    SELECT project, run_id, key, min(seq) AS first_seq, argMax(value, seq) AS kind
                    FROM {database}.run_fields
                    WHERE doc = 'metric_defined' AND value != ''
                    GROUP BY project, run_id, key
                )
                GROUP BY project, run_id
            ) AS d ON d.project = m.project AND d.run_id = m.run_id
        ) AS metric
        FULL OUTER JOIN
        (
            SELECT
                f.project AS project,
                f.run_id AS run_id,
                f.key AS name,
                argMax(f.value, (f.seq, f.pos)) AS v_all,
                argMaxIf(f.value, (f.seq, f.pos), NOT has(fin.seqs, f.seq + 1)) AS v_open,
                countIf(NOT has(fin.seqs, f.seq + 1)) > 0 AS has_open
            FROM {database}.run_fields AS f
            LEFT JOIN
            (
                SELECT project, run_id, groupArray(seq) AS seqs
                FROM {database}.run_fields
                WHERE doc = 'run_finished'
                GROUP BY project, run_id
            ) AS fin ON fin.project = f.project AND fin.run_id = f.run_id
            WHERE f.doc = 'summary'
            GROUP BY project, run_id, name
        ) AS explicit USING (project, run_id, name)
    )
    GROUP BY project, run_id
) AS s ON s.project = r.project AND s.run_id = r.run_id
SETTINGS join_use_nulls = 0, output_format_json_escape_forward_slashes = 0;
