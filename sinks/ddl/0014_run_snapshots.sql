-- runs_current from a table: each run's row as computed (0013's runs_current, now named
-- runs_computed, same SQL and rules), stored by the sink after it writes the run's events.
--
-- Why: computing runs_current for a project means building every run's config and summary
-- from run_fields and run_summaries (100,000 runs: about 1.1 s on a quiet 2-core machine, and
-- about 0.13 s of query analysis alone even for one run), and every runs table page, every
-- `api.runs()` and every run page paid that. Reading stored rows costs a scan of one row per
-- run (100,000 runs: 0.06 s).
--
-- How it stays right: the sink (runstream/sinks/snapshots.py) inserts
-- `SELECT ... FROM runs_computed WHERE project = ... AND run_id IN (...)` for the runs of the
-- batches it wrote, at least once a second (setting sink_snapshot_seconds), and only then
-- commits those batches' Kafka offsets: a sink stopped in between reads the batches again and
-- refreshes their runs, so a stored row is never left older than the events in ClickHouse.
-- Rows replace each other by `refreshed_at` (ReplacingMergeTree); runs_current reads the
-- latest with FINAL. Something that writes events around the sink (a restore, a hand-made
-- INSERT) refreshes the rows with the same statement (docs/sql.md, "runs_current").

CREATE TABLE IF NOT EXISTS {database}.run_snapshots
(
    project LowCardinality(String),
    run_id String,
    name String,
    status String,
    exit_code Nullable(Int64),
    `group` String,
    job_type String,
    tags Array(String),
    config String CODEC(ZSTD(3)),
    summary String CODEC(ZSTD(3)),
    started_at DateTime64(6, 'UTC'),
    finished_at Nullable(DateTime64(6, 'UTC')),
    last_event_at DateTime64(6, 'UTC'),
    last_heartbeat Nullable(DateTime64(6, 'UTC')),
    last_step Nullable(Int64),
    last_seq UInt64,
    notes String,
    environment String CODEC(ZSTD(3)),
    refreshed_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(refreshed_at)
ORDER BY (project, run_id);

CREATE OR REPLACE VIEW {database}.runs_computed AS
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

-- Rows for the runs already there (skips those stored by an earlier try of this migration).
INSERT INTO {database}.run_snapshots
SELECT *, now64(6) AS refreshed_at
FROM {database}.runs_computed
WHERE (project, run_id) NOT IN (SELECT project, run_id FROM {database}.run_snapshots);

CREATE OR REPLACE VIEW {database}.runs_current AS
SELECT
    project,
    run_id,
    name,
    status,
    exit_code,
    `group`,
    job_type,
    tags,
    config,
    summary,
    started_at,
    finished_at,
    last_event_at,
    last_heartbeat,
    last_step,
    last_seq,
    notes,
    environment
FROM {database}.run_snapshots FINAL;
