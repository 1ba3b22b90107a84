"""How a run ends when its program ends (issue 10, item 6): real child processes, offline mode,
the run_finished event read back from the spool."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from runstream.producers.ending import exit_status, process_exit_code, status_for
from runstream.producers.spool import RunSpool, SpoolState, runs_dir

PRELUDE = """
import os, signal, sys, time
import runstream
from runstream.settings import Settings
settings = Settings.load(mode="offline", dir=sys.argv[1], system_metrics_interval=0)
"""
INIT = """
run = runstream.init(settings=settings, id="child")
run.log({"loss": 1.0})
"""


def user_handler(code: str) -> str:
    return f"""
def handler(signum, frame):
    sys.exit({code})
signal.signal(signal.SIGTERM, handler)
"""


SIGTERM_SELF = "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\n"

CASES: dict[str, tuple[str, int, int, str]] = {
    # name: (script after the prelude, process return code, run exit code, run status)
    "falls off the end": (INIT, 0, 0, "finished"),
    "sys.exit(3)": (INIT + "sys.exit(3)", 3, 3, "failed"),
    "sys.exit(0)": (INIT + "sys.exit(0)", 0, 0, "finished"),
    "sys.exit(None)": (INIT + "sys.exit(None)", 0, 0, "finished"),
    "sys.exit(message)": (INIT + "sys.exit('bye')", 1, 1, "failed"),
    "sys.exit(137)": (INIT + "sys.exit(137)", 137, 137, "killed"),
    "sys.exit(256)": (INIT + "sys.exit(256)", 0, 0, "finished"),  # as the OS sees it
    "sys.exit in a function": (INIT + "def main():\n    sys.exit(4)\nmain()", 4, 4, "failed"),
    "sys.exit inside with": (
        "with runstream.init(settings=settings, id='child') as run:\n"
        "    run.log({'loss': 1.0})\n    raise SystemExit(5)",
        5,
        5,
        "failed",
    ),
    "uncaught exception": (INIT + "raise RuntimeError('diverged')", 1, 1, "failed"),
    "KeyboardInterrupt": (INIT + "raise KeyboardInterrupt", -signal.SIGINT, 130, "killed"),
    # Python's own SIGINT handler, as a terminal gives it: a shell starts background jobs
    # with SIGINT ignored, and Python then installs none.
    "SIGINT": (
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        + INIT
        + "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(10)",
        -2,
        130,
        "killed",
    ),
    "SIGTERM, no handler": (INIT + SIGTERM_SELF, -signal.SIGTERM, 143, "killed"),
    "SIGTERM, handler after init": (INIT + user_handler("143") + SIGTERM_SELF, 143, 143, "killed"),
    "SIGTERM, handler before init": (user_handler("143") + INIT + SIGTERM_SELF, 143, 143, "killed"),
    "SIGTERM, graceful handler": (
        "stop = []\nsignal.signal(signal.SIGTERM, lambda s, f: stop.append(s))\n"
        + INIT
        + "os.kill(os.getpid(), signal.SIGTERM)\nwhile not stop: time.sleep(0.01)\n"
        + "run.log({'after_sigterm': 1.0})",  # the run goes on after the program's handler
        0,
        0,
        "finished",
    ),
    "SIGTERM ignored": (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + INIT + "os.kill(os.getpid(), "
        "signal.SIGTERM)\ntime.sleep(0.2)\nrun.log({'after_sigterm': 1.0})",
        0,
        0,
        "finished",
    ),
    "excepthook replaced, sys.exit(2)": (
        INIT + "sys.excepthook = lambda *a: None\nsys.exit(2)",
        2,
        2,
        "failed",
    ),
}
if sys.version_info >= (3, 12):  # seen through sys.monitoring only
    CASES["raise SystemExit(3)"] = (INIT + "raise SystemExit(3)", 3, 3, "failed")
    CASES["sys.exit caught and survived"] = (
        INIT + "try:\n    sys.exit(3)\nexcept SystemExit:\n    pass",
        0,
        0,
        "finished",
    )
    CASES["excepthook replaced, exception"] = (
        INIT + "sys.excepthook = lambda *a: None\nraise ValueError",
        1,
        1,
        "failed",
    )


def spooled_events(root: Path, run_id: str) -> list[dict[str, Any]]:
    path = runs_dir(root) / run_id
    spool = RunSpool(path, SpoolState(run_id, "", "t", ""))
    return [orjson.loads(data) for _, data in spool.read_from(0)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_run_ends_with_the_programs_real_exit_status(tmp_path: Path, case: str) -> None:
    script, returncode, exit_code, status = CASES[case]
    code = textwrap.dedent(PRELUDE) + script + "\n"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == returncode, done.stderr
    events = spooled_events(tmp_path / "spool", "child")
    finished = [e["body"] for e in events if e["type"] == "run_finished"]
    assert finished == [{"exit_code": exit_code, "status": status}], done.stderr
    if "after_sigterm" in script:
        logged = [e["body"]["metrics"] for e in events if e["type"] == "metrics_logged"]
        assert {"after_sigterm": 1.0} in logged


def test_exit_codes_follow_the_os_and_the_shells_signal_convention() -> None:
    assert [process_exit_code(c) for c in (None, 0, 3, "bye", True, -1, 256, 2**70)] == [
        0, 0, 3, 1, 1, 255, 0, 255
    ]  # fmt: skip
    assert [status_for(c) for c in (0, 1, 3, 128, 130, 137, 143, 255)] == [
        "finished", "failed", "failed", "failed", "killed", "killed", "killed", "failed"
    ]  # fmt: skip
    assert exit_status(SystemExit, SystemExit(143)) == (143, "killed")
    assert exit_status(KeyboardInterrupt, KeyboardInterrupt()) == (130, "killed")
    assert exit_status(ValueError, ValueError()) == (1, "failed")
    assert exit_status(None, None) == (0, "finished")


ONLINE_KEYBOARD_INTERRUPT = """
import sys
import runstream
from runstream.settings import Settings
settings = Settings.load(
    kafka_bootstrap=sys.argv[2], topic_prefix=sys.argv[3], dir=sys.argv[1],
    system_metrics_interval=0, finish_timeout=20,
)
run = runstream.init(settings=settings, id="child")
run.log({"loss": 1.0})
raise KeyboardInterrupt
"""


def test_an_online_run_keeps_the_exit_status_of_an_uncaught_keyboard_interrupt(
    tmp_path: Path, settings: Any
) -> None:
    """Issue 10 item 6 (a fresh user's report): with an online run open (librdkafka's threads
    running, the run finished on the way out), ``raise KeyboardInterrupt`` ended the process
    with 1 instead of death by SIGINT (130 in a shell); the run itself said killed/130."""
    from tests.helpers import topic_records

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ONLINE_KEYBOARD_INTERRUPT,
            str(tmp_path / "spool"),
            settings.kafka_bootstrap,
            settings.topic_prefix,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == -signal.SIGINT, done.stderr
    from runstream.schemas.topics import Topics

    events = [v for _, v in topic_records(settings, Topics(settings.topic_prefix).events)]
    finished = [e["body"] for e in events if e["type"] == "run_finished"]
    assert finished == [{"exit_code": 130, "status": "killed"}], done.stderr


def test_a_sigterm_while_finish_waits_on_kafka_ends_the_process(tmp_path: Path) -> None:
    """A scheduler's SIGTERM arriving while the program's own finish() waits for Kafka (here
    away) used to hang the process for good: the handler's finish() waited on the lock the
    interrupted finish() held. Now the process dies of the signal within finish_timeout, and
    the run's events, run_finished included, are in the spool for `runstream sync`."""
    import time

    code = textwrap.dedent(
        """
        import sys, time
        import runstream
        from runstream.settings import Settings
        settings = Settings.load(dir=sys.argv[1], kafka_bootstrap="127.0.0.1:1",
                                 finish_timeout=6, system_metrics_interval=0)
        run = runstream.init(settings=settings, id="child")
        for s in range(10):
            run.log({"x": s}, step=s)
        print("finishing", flush=True)
        run.finish()
        print("finish returned", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spool")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "finishing"
    time.sleep(1.0)  # inside finish(), waiting for Kafka
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGTERM, child.stderr.read() if child.stderr else ""
    assert time.monotonic() - sent < 15  # finish_timeout (6 s), not forever
    events = spooled_events(tmp_path / "spool", "child")
    assert [e["body"]["step"] for e in events if e["type"] == "metrics_logged"] == list(range(10))
    assert [e["body"] for e in events if e["type"] == "run_finished"] == [
        {"exit_code": 0, "status": "finished"}
    ]
