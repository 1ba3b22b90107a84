-- runs_current again, same columns and the same values as 0011's (docs/sql.md, "runs_current"
-- and "The summary"), in a shape that costs less and that filters reach.
--
-- What was slow in 0011's view (100,000 runs): the config took a join of every run_fields row
-- with the run's latest run_started and a GROUP BY per (run, key) before the one per run; the
-- summary a join of every (run, metric) row with the run's define_metric choices and a FULL
-- OUTER JOIN per (run, key) with the explicit keys, whose USING columns (firstNonDefault(...))
-- stopped ClickHouse from pushing `WHERE project = ... AND run_id = ...` into any part of the
-- view: reading one run cost as much as reading all of them.
--
-- Here every part is one GROUP BY (project, run_id), joined to the runs aggregate on those
-- columns, so a filter on project or run_id reaches each table's primary key:
--   f  one pass over the run's run_fields rows; config, environment, the define_metric choices
--      and the explicit summary keys are computed per run with array functions. Rows sorted
--      by (key, seq, pos): a key's first row gives its place, its last row its value, which
--      is what 0011's min(seq), argMin(pos, seq) and argMax(value, (seq, pos)) per key said.
--   m  the run's metrics from run_summaries_current, as one array.
-- The summary is put together per run from f and m with 0011's rules unchanged: a metric's
-- value by its summary kind (exact name, else the first-defined matching 'prefix*' pattern,
-- else last), an explicit key outside a closing summary wins over it, explicit keys that are
-- no metric's name keep their latest value, '' (removed) keys are left out, keys sorted.
-- name and notes (run_updates) are as in 0011.
--
-- runs_brief is runs_current without config, summary and environment (the runs aggregate and
-- run_updates, as in 0011): runs_current reads it, and a reader that filters and sorts on its
-- columns only (status, started_at, name, tags, ...) finds a page of run ids without paying
-- for the documents (runstream.read.Api.runs reads the page's rows from runs_current next).

CREATE OR REPLACE VIEW {database}.runs_brief AS
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
    coalesce(r.m_started_at, r.m_first_event_at) AS started_at,
    if(r.m_status IN ('', 'running'), NULL, r.m_finished_at) AS finished_at,
    r.m_last_event_at AS last_event_at,
    r.m_last_heartbeat AS last_heartbeat,
    r.m_last_step AS last_step,
    r.m_last_seq AS last_seq,
    if(u.u_has_notes AND (r.m_started_seq IS NULL OR u.u_notes_seq > r.m_started_seq), u.u_notes, r.m_notes) AS notes
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
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {database}.runs_current AS
SELECT
    r.project AS project,
    r.run_id AS run_id,
    r.name AS name,
    r.status AS status,
    r.exit_code AS exit_code,
    r.`group` AS `group`,
    r.job_type AS job_type,
    r.tags AS tags,
    if(f.config = '', '{}', f.config) AS config,
    concat(
        '{',
        arrayStringConcat(
            arrayMap(
                k -> concat(toJSONString(k.1), ':', k.2),
                arraySort(
                    arrayFilter(
                        k -> k.2 != '',
                        arrayConcat(
                            arrayMap(
                                x -> (
                                    x.1,
                                    if(
                                        arrayExists(e -> e.1 = x.1 AND e.4, f.explicit),
                                        arrayFirst(e -> e.1 = x.1, f.explicit).3,
                                        multiIf(
                                            x.2 IS NULL, 'null',
                                            isNaN(x.2), '"NaN"',
                                            isInfinite(x.2), if(x.2 > 0, '"Infinity"', '"-Infinity"'),
                                            match(toString(x.2), '^-?[0-9]+$'), concat(toString(x.2), '.0'),
                                            toString(x.2)
                                        )
                                    )
                                ),
                                arrayMap(
                                    x -> (
                                        x.1,
                                        multiIf(x.2 = 'min', x.3.3, x.2 = 'max', x.3.4, x.2 = 'mean', x.3.5, x.3.2)
                                    ),
                                    arrayMap(
                                        x -> (
                                            x.1,
                                            if(
                                                has(arrayMap(d -> d.1, f.defs), x.1),
                                                arrayFirst(d -> d.1 = x.1, f.defs).3,
                                                arraySort(
                                                    d -> d.2,
                                                    arrayFilter(
                                                        d -> endsWith(d.1, '*')
                                                            AND startsWith(x.1, substring(d.1, 1, length(d.1) - 1)),
                                                        f.defs
                                                    )
                                                )[1].3
                                            ),
                                            x
                                        ),
                                        m.metrics
                                    )
                                )
                            ),
                            arrayMap(
                                e -> (e.1, e.2),
                                arrayFilter(e -> NOT has(arrayMap(x -> x.1, m.metrics), e.1), f.explicit)
                            )
                        )
                    )
                )
            ),
            ','
        ),
        '}'
    ) AS summary,
    r.started_at AS started_at,
    r.finished_at AS finished_at,
    r.last_event_at AS last_event_at,
    r.last_heartbeat AS last_heartbeat,
    r.last_step AS last_step,
    r.last_seq AS last_seq,
    r.notes AS notes,
    f.environment AS environment
FROM {database}.runs_brief AS r
LEFT JOIN
(
    -- One pass over a run's run_fields rows, then array functions per run (no join, no second
    -- GROUP BY per key). A key counts from the latest run_started on (its seq is `base`, 0 when
    -- none); its latest value wins; keys keep the place they were first given. Rows sorted by
    -- (key, seq, pos): the first of a key's rows gives its place, the last its value.
    SELECT
        project,
        run_id,
        maxIf(seq, doc = 'run_started') AS base,
        argMaxIf(value, seq, doc = 'environment') AS environment,
        groupArrayIf(seq, doc = 'run_finished') AS fin,
        arraySort(
            x -> (x.3, x.1, x.2),
            arrayFilter(x -> x.1 >= base, groupArrayIf((seq, pos, key, value), doc = 'config'))
        ) AS cs,
        concat(
            '{',
            arrayStringConcat(
                arrayMap(
                    k -> concat(toJSONString(k.3), ':', k.4),
                    arraySort(
                        k -> (k.1, k.2),
                        arrayFilter(
                            k -> k.4 != '',
                            arrayMap(
                                (first, last) -> (first.1, first.2, first.3, last.4),
                                arrayFilter((x, i) -> i = 1 OR cs[i - 1].3 != x.3, cs, arrayEnumerate(cs)),
                                arrayFilter((x, i) -> i = length(cs) OR cs[i + 1].3 != x.3, cs, arrayEnumerate(cs))
                            )
                        )
                    )
                ),
                ','
            ),
            '}'
        ) AS config,
        -- define_metric choices per key: (key, first seq, latest summary kind).
        arraySort(x -> (x.1, x.2), groupArrayIf((key, seq, value), doc = 'metric_defined' AND value != '')) AS ds,
        arrayMap(
            (first, last) -> (first.1, first.2, last.3),
            arrayFilter((x, i) -> i = 1 OR ds[i - 1].1 != x.1, ds, arrayEnumerate(ds)),
            arrayFilter((x, i) -> i = length(ds) OR ds[i + 1].1 != x.1, ds, arrayEnumerate(ds))
        ) AS defs,
        -- Explicit summary keys: (key, latest value, latest value outside a closing summary,
        -- whether there is one); a closing summary is the summary_updated at a run_finished's
        -- seq - 1.
        arraySort(
            x -> (x.3, x.1, x.2),
            arrayMap(
                x -> (x.1, x.2, x.3, x.4, NOT has(fin, x.1 + 1)),
                groupArrayIf((seq, pos, key, value), doc = 'summary')
            )
        ) AS ss,
        arrayFilter(x -> x.5, ss) AS so,
        arrayFilter((x, i) -> i = length(so) OR so[i + 1].3 != x.3, so, arrayEnumerate(so)) AS so_last,
        arrayMap(
            x -> (x.3, x.4, arrayFirst(y -> y.3 = x.3, so_last).4, arrayExists(y -> y.3 = x.3, so_last)),
            arrayFilter((x, i) -> i = length(ss) OR ss[i + 1].3 != x.3, ss, arrayEnumerate(ss))
        ) AS explicit
    FROM {database}.run_fields
    WHERE doc IN ('run_started', 'config', 'environment', 'run_finished', 'summary', 'metric_defined')
    GROUP BY project, run_id
) AS f ON f.project = r.project AND f.run_id = r.run_id
LEFT JOIN
(
    SELECT project, run_id, groupArray((toString(name), last, min, max, mean)) AS metrics
    FROM {database}.run_summaries_current
    GROUP BY project, run_id
) AS m ON m.project = r.project AND m.run_id = r.run_id
SETTINGS join_use_nulls = 0, output_format_json_escape_forward_slashes = 0;
