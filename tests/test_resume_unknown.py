"""Resuming a run whose position cannot be known (issue 10, item 5; a fresh user's report):
ClickHouse unreachable and no local spool of the run. Real broker, real sink, real ClickHouse."""

from __future__ import annotations

import logging
import time

import pytest

import runstream
from runstream.producers.resume import SEQ_BASE_SHIFT, unknown_position_base
from runstream.producers.run import ResumeError
from runstream.settings import Settings
from tests.conftest import free_port
from tests.helpers import rows, scalar, sink_until

pytestmark = pytest.mark.integration


def test_a_session_resumed_blind_is_numbered_apart_and_lands_whole(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 2 on another machine (empty spool) with ClickHouse unreachable used to start at
    seq 0 with no warning, finish() said ok, and the sink discarded all of it as a re-send of
    session 1. Now: one warning, seqs from a time-based base, and every event lands."""
    quiet = settings.with_overrides(system_metrics_interval=0)
    first = runstream.init(settings=quiet, id="blind", project="resume")
    for step in range(5):
        first.log({"loss": float(step)})
    assert first.finish().ok
    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 7)

    blind = quiet.with_overrides(
        dir=settings.dir.parent / "elsewhere",
        clickhouse_url=f"http://127.0.0.1:{free_port()}",
    )
    before = unknown_position_base()
    with caplog.at_level(logging.WARNING, logger="runstream"):
        second = runstream.init(settings=blind, id="blind", resume="allow", project="resume")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not be asked" in warnings[0], warnings
    for _ in range(3):
        second.log({"loss": -1.0})
    result = second.finish()
    assert result.ok and result.delivered == 5  # run_resumed, 3 metrics, run_finished

    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.events") >= 12)
    seqs = [r[0] for r in rows(settings, f"SELECT seq FROM {db}.events ORDER BY seq")]
    assert seqs[:7] == list(range(7))
    assert before <= seqs[7] < 2**63 and seqs[7:] == list(range(seqs[7], seqs[7] + 5))
    assert rows(settings, f"SELECT status, exit_code FROM {db}.runs_current") == [("finished", 0)]
    assert scalar(settings, f"SELECT count() FROM {db}.metrics") == 8


def test_resume_must_refuses_when_the_position_cannot_be_known(settings: Settings) -> None:
    blind = settings.with_overrides(
        dir=settings.dir.parent / "nowhere", clickhouse_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(ResumeError, match="where it stands is unknown"):
        runstream.init(settings=blind, id="anything", resume="must")


def test_the_seq_base_is_above_every_earlier_base_and_within_int64() -> None:
    now = time.time()
    assert unknown_position_base(now + 0.001) > unknown_position_base(now) + 2**SEQ_BASE_SHIFT - 1
    assert unknown_position_base(now) > 2**60
    assert unknown_position_base(8.79e9) < 2**63  # early in the year 2248
