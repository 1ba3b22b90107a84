-- Delivery state per webhook. For every delivery of an alert version to one webhook the notifier
-- publishes a record on <prefix>.alert-deliveries when it starts (state `delivering`) and when
-- it ends (`delivered` or `failed`), and the sink writes them here. ReplacingMergeTree keeps the
-- latest state of each (alert, event, webhook); `event` is 'fired' or 'resolved', the version
-- that was delivered. `alerts_current` shows them per alert, so it no longer shows the state of
-- whichever webhook finished last.

CREATE TABLE IF NOT EXISTS {database}.alert_deliveries
(
    project          LowCardinality(String),
    run_id           String,
    alert_id         String,
    event            LowCardinality(String),
    webhook          String,
    state            LowCardinality(String),
    attempts         UInt32,
    status           Nullable(UInt16),
    last_attempt_at  Nullable(DateTime64(6, 'UTC')),
    delivered_at     Nullable(DateTime64(6, 'UTC')),
    last_error       String,
    updated_at       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (project, run_id, alert_id, event, webhook)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS {database}.alert_deliveries_current AS
SELECT * FROM {database}.alert_deliveries FINAL;

-- Per alert, the deliveries of its current event (fired, or resolved once resolved_at is set):
-- `deliveries` has one entry per webhook, by name. delivery_state sums them up: `delivering`
-- while any is under way, else `failed` if any failed, else `delivered`; with none (no webhook
-- wants it, or the notifier has not reached it) the alert's own state, `pending`. attempts adds
-- theirs up, last_attempt_at is the latest, last_error lists each failed webhook's error.
CREATE OR REPLACE VIEW {database}.alerts_current AS
SELECT
    a.alert_id AS alert_id,
    a.rule AS rule,
    a.project AS project,
    a.run_id AS run_id,
    a.metric AS metric,
    a.value AS value,
    a.step AS step,
    a.level AS level,
    a.title AS title,
    a.text AS text,
    a.fired_at AS fired_at,
    a.resolved_at AS resolved_at,
    if(
        empty(d.deliveries),
        a.delivery_state,
        multiIf(
            has(d.deliveries.state, 'delivering'), 'delivering',
            has(d.deliveries.state, 'failed'), 'failed',
            'delivered'
        )
    ) AS delivery_state,
    if(empty(d.deliveries), a.attempts, arraySum(d.deliveries.attempts)) AS attempts,
    if(empty(d.deliveries), a.last_attempt_at, arrayMax(d.deliveries.last_attempt_at))
        AS last_attempt_at,
    if(
        empty(d.deliveries),
        a.last_error,
        arrayStringConcat(
            arrayMap(
                x -> concat(x.webhook, ': ', x.last_error),
                arrayFilter(x -> x.state = 'failed', d.deliveries)
            ),
            '; '
        )
    ) AS last_error,
    a.source_seq AS source_seq,
    a.updated_at AS updated_at,
    d.deliveries AS deliveries
FROM (SELECT * FROM {database}.alerts FINAL) AS a
GLOBAL LEFT JOIN
(
    SELECT
        alert_id,
        event,
        arraySort(x -> x.webhook, groupArray(CAST(
            (webhook, state, attempts, status, last_attempt_at, delivered_at, last_error),
            'Tuple(webhook String, state String, attempts UInt32, status Nullable(UInt16), last_attempt_at Nullable(DateTime64(6, \'UTC\')), delivered_at Nullable(DateTime64(6, \'UTC\')), last_error String)'
        ))) AS deliveries
    FROM {database}.alert_deliveries FINAL
    GROUP BY alert_id, event
) AS d
ON d.alert_id = a.alert_id AND d.event = if(a.resolved_at IS NULL, 'fired', 'resolved');
