-- runs_current.config, .summary and .environment as the producer sent them, and a summary that
-- agrees with run_summaries_current across resumed sessions.
--
-- Why a new table: ClickHouse's JSON functions parse a value and print it again, so 1.0 came back
-- as 1, -0.0 as 0 and 1e20 as "100000000000000000000" (a string after a second pass). Here a JSON
-- document is cut into its tokens with a regular expression (strings, numbers and literals are
-- kept byte for byte) and each top-level member's value is kept as the concatenation of its
-- tokens: exactly the text of `events.body`, without whitespace. The bodies are valid JSON (the
-- sink checks every event before it lands), so the tokens are too.
--
-- run_fields holds one row per top-level member of a config or summary document, and one row per
-- run_started, metric_defined and run_finished event:
--   doc = 'config'          key = config key, value = its JSON text ('' = removed by a null patch)
--   doc = 'summary'         key = summary key, value = its JSON text ('' = removed by a null)
--   doc = 'environment'     key = '',         value = the run_started environment object
--   doc = 'run_started'     key = '',         value = ''  (a config starts again from here)
--   doc = 'metric_defined'  key = name or prefix pattern ('val/*'), value = min|max|last|mean
--   doc = 'run_finished'    key = '',         value = ''
-- `pos` is the member's place in its document (1, 2, ...), which keeps a config's key order.
-- Every reader takes the latest value by (seq, pos) with argMax, or a min or max, so a row
-- stored twice (a backfill racing the view) changes no answer.

CREATE TABLE IF NOT EXISTS {database}.run_fields
(
    project  LowCardinality(String),
    run_id   String,
    doc      LowCardinality(String),
    key      String,
    seq      UInt64,
    pos      UInt32,
    value    String CODEC(ZSTD(3))
)
ENGINE = MergeTree
ORDER BY (project, run_id, doc, key, seq)
SETTINGS non_replicated_deduplication_window = 1000;

-- Only these five event types are read (their WHERE comes before any parsing), so the view costs
-- nothing for metrics_logged events on the sink's insert path.
-- depth[i] is the nesting depth before token i: the body's own members are at depth 1, the
-- members of body.config / body.summary (and the commas between them) at depth 2.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.run_fields_mv TO {database}.run_fields
AS SELECT project, run_id, f.1 AS doc, f.2 AS key, seq, f.3 AS pos, f.4 AS value
FROM
(
    SELECT
        project,
        run_id,
        seq,
        type,
        if(
            type IN ('run_started', 'config_updated', 'summary_updated'),
            extractAll(body, '"(?:[^"\\\\]|\\\\.)*"|-?[0-9][0-9.eE+-]*|[{}\\[\\]:,]|true|false|null'),
            CAST([], 'Array(String)')
        ) AS t,
        arrayMap(x -> multiIf(x IN ('{', '['), 1, x IN ('}', ']'), -1, 0), t) AS delta,
        arrayMap((a, d) -> a - d, arrayCumSum(delta), delta) AS depth,
        if(type = 'summary_updated', '"summary"', '"config"') AS doc_key,
        arrayFirstIndex((x, d, i) -> d = 1 AND x = doc_key AND t[i + 1] = ':', t, depth, arrayEnumerate(t)) + 2
            AS open,
        arrayFirstIndex((x, d, i) -> i > open AND d = 2 AND x = '}', t, depth, arrayEnumerate(t)) AS close,
        arrayFilter(
            p -> length(p) >= 3,
            arrayMap(
                p -> if(p[1] = ',', arrayPopFront(p), p),
                arraySplit(
                    (x, d) -> x = ',' AND d = 2,
                    arraySlice(t, open + 1, close - open - 1),
                    arraySlice(depth, open + 1, close - open - 1)
                )
            )
        ) AS members,
        arrayMap(
            (p, i) -> (
                if(type = 'summary_updated', 'summary', 'config'),
                JSONExtractString(p[1]),
                toUInt32(i),
                if(type != 'run_started' AND length(p) = 3 AND p[3] = 'null', '', arrayStringConcat(arraySlice(p, 3)))
            ),
            members,
            arrayEnumerate(members)
        ) AS member_rows,
        arrayFirstIndex((x, d, i) -> d = 1 AND x = '"environment"' AND t[i + 1] = ':', t, depth, arrayEnumerate(t)) + 2
            AS env_open,
        arrayFirstIndex((x, d, i) -> i > env_open AND d = 2 AND x = '}', t, depth, arrayEnumerate(t)) AS env_close,
        CAST(
            multiIf(
                type = 'run_started',
                arrayConcat(
                    [('run_started', '', toUInt32(0), '')],
                    if(
                        env_open > 2 AND t[env_open] = '{' AND env_close > env_open,
                        [('environment', '', toUInt32(0), arrayStringConcat(arraySlice(t, env_open, env_close - env_open + 1)))],
                        []
                    ),
                    if(open > 2 AND t[open] = '{' AND close > open, member_rows, [])
                ),
                type IN ('config_updated', 'summary_updated'),
                if(open > 2 AND t[open] = '{' AND close > open, member_rows, []),
                type = 'metric_defined',
                [('metric_defined', JSONExtractString(body, 'name'), toUInt32(0), JSONExtractString(body, 'summary'))],
                [('run_finished', '', toUInt32(0), '')]
            ),
            'Array(Tuple(String, String, UInt32, String))'
        ) AS fields
    FROM {database}.events
    WHERE type IN ('run_started', 'config_updated', 'summary_updated', 'metric_defined', 'run_finished')
)
ARRAY JOIN fields AS f;

-- Backfill the events stored before the view existed: a run's events are inserted in seq order,
-- so the rows still missing for a run are those below the smallest seq the view wrote for it.
INSERT INTO {database}.run_fields (project, run_id, doc, key, seq, pos, value)
SELECT e.project, e.run_id, f.1, f.2, e.seq, f.3, f.4
FROM
(
    SELECT
        project,
        run_id,
        seq,
        type,
        if(
            type IN ('run_started', 'config_updated', 'summary_updated'),
            extractAll(body, '"(?:[^"\\\\]|\\\\.)*"|-?[0-9][0-9.eE+-]*|[{}\\[\\]:,]|true|false|null'),
            CAST([], 'Array(String)')
        ) AS t,
        arrayMap(x -> multiIf(x IN ('{', '['), 1, x IN ('}', ']'), -1, 0), t) AS delta,
        arrayMap((a, d) -> a - d, arrayCumSum(delta), delta) AS depth,
        if(type = 'summary_updated', '"summary"', '"config"') AS doc_key,
        arrayFirstIndex((x, d, i) -> d = 1 AND x = doc_key AND t[i + 1] = ':', t, depth, arrayEnumerate(t)) + 2
            AS open,
        arrayFirstIndex((x, d, i) -> i > open AND d = 2 AND x = '}', t, depth, arrayEnumerate(t)) AS close,
        arrayFilter(
            p -> length(p) >= 3,
            arrayMap(
                p -> if(p[1] = ',', arrayPopFront(p), p),
                arraySplit(
                    (x, d) -> x = ',' AND d = 2,
                    arraySlice(t, open + 1, close - open - 1),
                    arraySlice(depth, open + 1, close - open - 1)
                )
            )
        ) AS members,
        arrayMap(
            (p, i) -> (
                if(type = 'summary_updated', 'summary', 'config'),
                JSONExtractString(p[1]),
                toUInt32(i),
                if(type != 'run_started' AND length(p) = 3 AND p[3] = 'null', '', arrayStringConcat(arraySlice(p, 3)))
            ),
            members,
            arrayEnumerate(members)
        ) AS member_rows,
        arrayFirstIndex((x, d, i) -> d = 1 AND x = '"environment"' AND t[i + 1] = ':', t, depth, arrayEnumerate(t)) + 2
            AS env_open,
        arrayFirstIndex((x, d, i) -> i > env_open AND d = 2 AND x = '}', t, depth, arrayEnumerate(t)) AS env_close,
        CAST(
            multiIf(
                type = 'run_started',
                arrayConcat(
                    [('run_started', '', toUInt32(0), '')],
                    if(
                        env_open > 2 AND t[env_open] = '{' AND env_close > env_open,
                        [('environment', '', toUInt32(0), arrayStringConcat(arraySlice(t, env_open, env_close - env_open + 1)))],
                        []
                    ),
                    if(open > 2 AND t[open] = '{' AND close > open, member_rows, [])
                ),
                type IN ('config_updated', 'summary_updated'),
                if(open > 2 AND t[open] = '{' AND close > open, member_rows, []),
                type = 'metric_defined',
                [('metric_defined', JSONExtractString(body, 'name'), toUInt32(0), JSONExtractString(body, 'summary'))],
                [('run_finished', '', toUInt32(0), '')]
            ),
            'Array(Tuple(String, String, UInt32, String))'
        ) AS fields
    FROM {database}.events
    WHERE type IN ('run_started', 'config_updated', 'summary_updated', 'metric_defined', 'run_finished')
) AS e
LEFT JOIN
(
    SELECT project, run_id, min(seq) AS seen_from
    FROM {database}.run_fields
    GROUP BY project, run_id
) AS s ON e.project = s.project AND e.run_id = s.run_id
ARRAY JOIN e.fields AS f
WHERE s.seen_from IS NULL OR e.seq < s.seen_from
SETTINGS join_use_nulls = 1;

-- runs_current, same columns as before (0003). What changed:
--   config       the latest run_started config with every later config_updated applied, as
--                before, but each value is the JSON text that was sent (1.0 stays 1.0).
--   environment  the latest run_started environment, as sent.
--   summary      one key per metric of the run (run_summaries_current, all points of every
--                session): the value its summary kind chooses (define_metric: the latest
--                choice for the exact name, else for the first-defined matching 'prefix*'
--                pattern, else last); then the keys set explicitly with summary_updated,
--                which win. The summary_updated right before a run_finished (seq + 1) is the
--                SDK's closing summary: SDKs before this release put derived values of one
--                session there, so for a metric's name it does not count (every key the user
--                set explicitly was sent on its own when it was set). A null removes a key.
-- A derived value prints as a JSON float with every digit needed to read back the same Float64
-- (1.0, 1e+21, -0.0 as -0.0); NaN and infinities as the schema's "NaN", "Infinity",
-- "-Infinity"; no value (min or max of a metric whose points are all NaN) as null.
CREATE OR REPLACE VIEW {database}.runs_current AS
SELECT
    r.project AS project,
    r.run_id AS run_id,
    if(r.m_name = '', r.run_id, r.m_name) AS name,
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
    r.m_notes AS notes,
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
        max(last_seq) AS m_last_seq
    FROM {database}.runs
    GROUP BY project, run_id
) AS r
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
                    WHERE doc = 'metric_defined'
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
