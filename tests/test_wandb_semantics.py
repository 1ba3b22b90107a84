"""runstream.wandb behaves as wandb 0.31 documents it: environment variables, resume without
an id, disabled mode, reinit, wandb.run after finish, define_metric (summary strings, goal,
step_metric), config.update(allow_val_change=), setdefaults, run.name / run.notes recorded, the
run attributes, term* and a forked worker's wandb.log. Checked on the real stack where the value
lands in ClickHouse."""

from __future__ import annotations

import logging
import os
import re
import types
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from packaging.version import Version

from runstream import wandb
from runstream.producers.start import DisabledRun
from runstream.settings import Settings
from tests.helpers import records_of, rows, scalar, sink_until

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parent.parent / "docs" / "wandb.md"


@pytest.fixture(autouse=True)
def clean_wandb(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    wandb.teardown()
    yield
    wandb.teardown()


def landed(settings: Settings, sql: str, expected: int = 1) -> None:
    sink_until(settings, lambda c: scalar(settings, sql) >= expected)


# --- environment variables -----------------------------------------------------------------------
def test_environment_variables_fill_what_the_arguments_leave_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_NAME", "env-name")
    monkeypatch.setenv("WANDB_RUN_ID", "envrun01")
    monkeypatch.setenv("WANDB_TAGS", "a, b ,c")
    monkeypatch.setenv("WANDB_NOTES", "env notes")
    monkeypatch.setenv("WANDB_RUN_GROUP", "g1")
    monkeypatch.setenv("WANDB_JOB_TYPE", "train")
    run = wandb.init(settings=settings)
    assert (run.project, run.name, run.id) == ("from-env", "env-name", "envrun01")
    assert run.tags == ("a", "b", "c")
    assert (run.notes, run.group, run.job_type) == ("env notes", "g1", "train")
    wandb.finish()

    # Arguments beat the environment.
    run = wandb.init(project="arg", name="arg-name", id="argrun01", tags=["x"], notes="n",
                     settings=settings)  # fmt: skip
    assert (run.project, run.name, run.id, run.tags, run.notes) == (
        "arg", "arg-name", "argrun01", ("x",), "n",
    )  # fmt: skip
    wandb.finish()

    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'", 2)
    got = rows(settings, f"SELECT project, run_id, name, tags, notes, `group` FROM "
               f"{db}.runs_current ORDER BY run_id")  # fmt: skip
    assert got == [
        ("arg", "argrun01", "arg-name", ["x"], "n", "g1"),  # the group still from the env
        ("from-env", "envrun01", "env-name", ["a", "b", "c"], "env notes", "g1"),
    ]


def test_wandb_dir_is_the_local_directory(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wdir"))
    run = wandb.init(mode="offline", settings=settings)
    assert Path(run.settings.dir) == tmp_path / "wdir" / ".runstream"
    assert run.dir == str(tmp_path / "wdir" / ".runstream" / "files" / run.id)
    assert Path(run.dir).is_dir()
    wandb.finish()
    run = wandb.init(mode="offline", dir=tmp_path / "arg", settings=settings)  # argument wins
    assert Path(run.settings.dir) == tmp_path / "arg" / ".runstream"
    wandb.finish()


@pytest.mark.parametrize(
    ("variable", "value", "mode"),
    [
        ("WANDB_MODE", "disabled", "disabled"),
        ("WANDB_MODE", "offline", "offline"),
        ("WANDB_MODE", "dryrun", "offline"),
        ("WANDB_MODE", "online", "online"),
        ("WANDB_DISABLED", "true", "disabled"),
        ("WANDB_DISABLED", "false", "online"),
    ],
)
def test_wandb_mode_and_wandb_disabled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, mode: str
) -> None:
    monkeypatch.setenv(variable, value)
    run = wandb.init(settings=settings)
    assert run.mode == mode
    assert (run.offline, run.disabled) == (mode == "offline", mode == "disabled")
    assert wandb.run is run
    wandb.finish()
    # An argument beats the variable.
    run = wandb.init(mode="offline", settings=settings)
    assert run.mode == "offline"
    wandb.finish()


# --- resume, disabled, reinit, finish -------------------------------------------------------------
@pytest.mark.parametrize("resume", ["allow", True, "auto"])
def test_resume_without_an_id_starts_a_new_run(settings: Settings, resume: object) -> None:
    run = wandb.init(project="p", resume=resume, settings=settings)  # no ResumeError
    assert not run.resumed and run.id
    run.log({"x": 1.0})
    wandb.finish()
    # With the id of that run, "allow" continues it.
    again = wandb.init(project="p", id=run.id, resume=resume, settings=settings)
    assert again.id == run.id
    wandb.finish()


def test_disabled_mode_becomes_wandb_run_and_never_writes_into_another_run(
    settings: Settings,
) -> None:
    open_run = wandb.init(project="p", name="open", settings=settings)
    open_run.log({"loss": 1.0}, step=0)
    disabled = wandb.init(mode="disabled", settings=settings)
    assert isinstance(disabled, DisabledRun) and disabled.disabled
    assert wandb.run is disabled
    wandb.log({"loss": 99.0})  # into the disabled run: nowhere
    wandb.config.update({"lr": 5})
    assert open_run.step == 1 and "lr" not in open_run.config
    wandb.finish()
    assert wandb.run is None and not open_run.finished
    open_run.finish()
    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
    assert rows(settings, f"SELECT step, value FROM {db}.metrics WHERE name = 'loss'") == [(0, 1.0)]


def test_reinit_default_and_return_previous_return_the_open_run(settings: Settings) -> None:
    first = wandb.init(project="p", settings=settings)
    assert wandb.init(project="p", settings=settings) is first
    assert wandb.init(project="p", reinit=False, settings=settings) is first
    assert wandb.init(project="p", reinit="return_previous", settings=settings) is first
    assert wandb.init(project="p", reinit="default", settings=settings) is first
    assert not first.finished and wandb.run is first


@pytest.mark.parametrize("reinit", [True, "finish_previous"])
def test_reinit_finish_previous_finishes_it_then_starts(settings: Settings, reinit: object) -> None:
    first = wandb.init(project="p", settings=settings)
    second = wandb.init(project="p", reinit=reinit, settings=settings)
    assert second is not first and first.finished and not second.finished
    assert wandb.run is second


def test_reinit_create_new_keeps_both_and_leaves_wandb_run(settings: Settings) -> None:
    first = wandb.init(project="p", settings=settings)
    second = wandb.init(project="p", reinit="create_new", settings=settings)
    assert second is not first and not first.finished and not second.finished
    assert wandb.run is first
    wandb.finish()  # finishes wandb.run (first); wandb.run is then None, not the open second
    assert first.finished and not second.finished
    assert wandb.run is None
    second.finish()


def test_after_run_finish_wandb_run_is_none(settings: Settings) -> None:
    older = wandb.init(project="p", settings=settings)
    newer = wandb.init(project="p", reinit="create_new", settings=settings)
    wandb.finish()  # older
    run = wandb.init(project="p", settings=settings)
    run.finish()  # finished on the run itself
    assert wandb.run is None and not newer.finished and older.finished
    assert wandb.finish() is None  # no run: a no-op
    newer.finish()


# --- config ---------------------------------------------------------------------------------------
def test_config_update_allow_val_change_setdefaults_as_dict(settings: Settings) -> None:
    run = wandb.init(project="p", config={"lr": 0.1}, settings=settings)
    wandb.config.update({"lr": 0.2, "epochs": 3}, allow_val_change=True)
    run.config.update({"batch": 8}, allow_val_change=False)
    wandb.config.setdefaults({"lr": 9.9, "seed": 1})
    run.config.setdefaults({"epochs": 100, "momentum": 0.9})
    expected = {"lr": 0.2, "epochs": 3, "batch": 8, "seed": 1, "momentum": 0.9}
    assert wandb.config.as_dict() == expected == run.config.as_dict()
    assert sorted(wandb.config.keys()) == sorted(expected)
    assert wandb.config.get("missing", "d") == "d" and wandb.config.lr == 0.2
    wandb.finish()
    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
    config = orjson.loads(scalar(settings, f"SELECT config FROM {db}.runs_current"))
    assert config == expected and "allow_val_change" not in config


# --- name and notes ------------------------------------------------------------------------------
def test_run_name_and_notes_assignment_is_recorded(settings: Settings) -> None:
    run = wandb.init(project="p", name="first", notes="before", settings=settings)
    run.name = "renamed"
    run.notes = "after"
    assert (run.name, run.notes) == ("renamed", "after")
    other = wandb.init(project="p", name="untouched", reinit="create_new", settings=settings)
    other.notes = "only notes"
    other.finish()
    wandb.finish()
    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'", 2)
    got = dict(
        (r[0], r[1:]) for r in rows(settings, f"SELECT run_id, name, notes FROM {db}.runs_current")
    )
    assert got == {run.id: ("renamed", "after"), other.id: ("untouched", "only notes")}
    events = records_of(settings, f"SELECT body FROM {db}.events WHERE type = 'run_updated' "
                        f"AND run_id = '{run.id}' ORDER BY seq")  # fmt: skip
    bodies = [orjson.loads(e["body"]) for e in events]
    assert [{k: v for k, v in b.items() if v is not None} for b in bodies] == [
        {"name": "renamed"},
        {"notes": "after"},
    ]


# --- define_metric --------------------------------------------------------------------------------
def test_define_metric_step_metric_is_recorded_and_gives_the_step(settings: Settings) -> None:
    run = wandb.init(project="p", settings=settings)
    wandb.define_metric("train/global_step")
    wandb.define_metric("*", step_metric="train/global_step", step_sync=True)
    run.define_metric("val/loss", summary="min", goal="minimize", step_metric="epoch",
                      step_sync=False, hidden=True)  # fmt: skip
    wandb.log({"train/loss": 0.5, "train/global_step": 10})
    wandb.log({"train/loss": 0.4, "train/global_step": 20.0})
    wandb.log({"train/lr": 0.1})  # step_sync: the last global step, 20
    wandb.log({"val/loss": 0.3, "epoch": 2})
    wandb.log({"other": 1.0}, step=500)  # step= wins
    wandb.finish()
    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
    assert rows(settings, f"SELECT name, step FROM {db}.metrics ORDER BY name, step") == [
        ("epoch", 2),
        ("other", 500),
        ("train/global_step", 10),
        ("train/global_step", 20),
        ("train/loss", 10),
        ("train/loss", 20),
        ("train/lr", 20),
        ("val/loss", 2),
    ]
    defs = records_of(settings, f"SELECT name, summary, step_metric, step_sync, goal, hidden "
                      f"FROM {db}.metric_definitions_current ORDER BY name")  # fmt: skip
    assert defs == [
        {"name": "*", "summary": "", "step_metric": "train/global_step", "step_sync": True,
         "goal": "", "hidden": None},
        {"name": "train/global_step", "summary": "", "step_metric": "", "step_sync": None,
         "goal": "", "hidden": None},
        {"name": "val/loss", "summary": "min", "step_metric": "epoch", "step_sync": False,
         "goal": "minimize", "hidden": True},
    ]  # fmt: skip
    # docs/sql.md: a metric against its step metric (the x axis), with an ASOF join.
    against = rows(
        settings,
        f"""
        SELECT m.step, m.value, x.value AS epoch
        FROM {db}.metrics AS m
        ASOF LEFT JOIN (SELECT run_id, step, value FROM {db}.metrics WHERE name = 'epoch') AS x
            ON m.run_id = x.run_id AND m.step >= x.step
        WHERE m.run_id = '{run.id}' AND m.name = 'val/loss' ORDER BY m.step""",
    )
    assert against == [(2, 0.3, 2.0)]
    # A definition without a summary chooses none: "*" does not make every metric "last".
    summary = orjson.loads(scalar(settings, f"SELECT summary FROM {db}.runs_current"))
    assert summary["val/loss"] == 0.3 and summary["train/loss"] == 0.4


@pytest.mark.parametrize(
    ("summary", "goal", "kind", "warned"),
    [
        ("min", None, "min", False),
        ("max", None, "max", False),
        ("mean", None, "mean", False),
        ("last", None, "last", False),
        ("copy", None, "last", False),
        ("best", "maximize", "max", False),
        ("best", "minimize", "min", False),
        ("min,max", None, "min", True),
        ("max, mean", None, "max", True),
        ("none", None, None, True),
        ("best", None, None, True),
        ("median", None, None, True),
    ],
)
def test_define_metric_summary_strings(  # noqa: PLR0917 - pytest's parameters
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    summary: str,
    goal: str | None,
    kind: str | None,
    warned: bool,
) -> None:
    from runstream.producers import metric_defs

    metric_defs._warned.clear()
    run = wandb.init(project="p", mode="offline", settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        wandb.define_metric("m", summary=summary, goal=goal)
        wandb.define_metric("m2", summary=summary, goal=goal)  # warned once, not twice
    assert run._summary_kinds.get("m") == kind
    warnings = [r for r in caplog.records if "define_metric" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0)
    for value in (3.0, 1.0, 2.0):
        run.log({"m": value})
    if kind is not None:
        assert run.summary["m"] == {"min": 1.0, "max": 3.0, "mean": 2.0, "last": 2.0}[kind]


def test_define_metric_summary_lands_in_runs_current(settings: Settings) -> None:
    wandb.init(project="p", settings=settings)
    wandb.define_metric("acc", summary="best", goal="maximize")
    wandb.define_metric("loss", summary="min,max")
    for acc, loss in ((0.5, 3.0), (0.9, 1.0), (0.7, 2.0)):
        wandb.log({"acc": acc, "loss": loss})
    wandb.finish()
    db = settings.clickhouse_database
    landed(settings, f"SELECT count() FROM {db}.runs_current WHERE status = 'finished'")
    summary = orjson.loads(scalar(settings, f"SELECT summary FROM {db}.runs_current"))
    assert (summary["acc"], summary["loss"]) == (0.9, 1.0)
    goal = scalar(settings, f"SELECT goal FROM {db}.metric_definitions_current WHERE name='acc'")
    assert goal == "maximize"


def test_define_metric_before_init_is_ignored() -> None:
    assert wandb.run is None
    wandb.define_metric("x", step_metric="y")  # no run: ignored with a warning, no exception


# --- run attributes, module functions -------------------------------------------------------------
def test_run_attributes(settings: Settings) -> None:
    import time

    before = time.time()
    run = wandb.init(project="proj", id="attr01", settings=settings)
    assert run.url == "runstream://proj/attr01" == run.get_url()
    assert run.get_project_url() == "runstream://proj"
    assert run.path == "proj/attr01" and run.entity == "" and run.project == "proj"
    assert before <= run.start_time <= time.time()
    assert (run.resumed, run.offline, run.disabled) == (False, False, False)
    run._label(code="transformers_trainer", repo="x")
    assert run.labels == {"code": "transformers_trainer", "repo": "x"}
    wandb.finish()
    resumed = wandb.init(project="proj", id="attr01", resume="allow", settings=settings)
    # The first session's events are only known once they landed: resumed may be False when
    # the sink is behind (docs/sdk.md, "Resume"); the attribute is what the SDK found.
    assert resumed.resumed in (True, False)
    wandb.finish()


def test_term_functions_and_version(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runstream"):
        wandb.termlog("hello")
        wandb.termwarn("careful", repeat=False)
        wandb.termwarn("careful", repeat=False)
        wandb.termerror("broken")
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("INFO", "wandb: hello"),
        ("WARNING", "wandb: careful"),
        ("ERROR", "wandb: broken"),
    ]
    assert Version(wandb.__version__) >= Version("0.31.0")
    assert wandb.__version__.startswith("0.31.0+runstream.")
    assert wandb.login() is True and wandb.setup() is None and wandb.require("service") is None
    assert len(wandb.util.generate_id()) == 8
    assert isinstance(wandb.Settings(mode="offline", project="p").project, str)


def test_wandb_log_in_a_forked_worker_warns_like_run_log(settings: Settings) -> None:
    run = wandb.init(project="p", mode="offline", settings=settings)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a DataLoader worker, say
        os.close(read)
        messages: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                messages.append(record.getMessage())

        logging.getLogger("runstream").addHandler(Keep())
        wandb.log({"loss": 1.0})
        wandb.log({"loss": 2.0})
        os.write(write, orjson.dumps(messages))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        messages = orjson.loads(pipe.read())
    os.waitpid(pid, 0)
    assert len(messages) == 1 and "forked child process" in messages[0], messages
    assert wandb.run is run
    wandb.finish()


# --- what the docs list exists --------------------------------------------------------------------
def documented_names() -> tuple[list[str], list[str]]:
    text = DOC.read_text(encoding="utf-8")
    module = re.findall(r"^\| `wandb\.([A-Za-z_][A-Za-z0-9_.]*)", text, flags=re.M)
    run = re.findall(r"^\| `run\.([A-Za-z_][A-Za-z0-9_]*)", text, flags=re.M)
    return module, run


def test_every_name_the_docs_list_exists(settings: Settings) -> None:
    module_names, run_names = documented_names()
    assert len(module_names) >= 20 and len(run_names) >= 20
    for dotted in module_names:
        target: object = wandb
        for part in dotted.split("."):
            if part == "run":
                target = wandb.init(project="p", settings=settings)
                continue
            assert hasattr(target, part), f"wandb.{dotted} is documented but missing"
            target = getattr(target, part)
    run = wandb.init(project="p", settings=settings)
    for name in run_names:
        assert hasattr(run, name), f"run.{name} is documented but missing"
    wandb.finish()
    # The other way: every public name of the module is in the table ("any other name raises").
    documented = {dotted.split(".")[0] for dotted in module_names}
    public = set(wandb.__all__) | {"run"}
    for name in dir(wandb):
        value = getattr(wandb, name)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if getattr(value, "__module__", "").startswith("runstream"):  # a name of its own
            assert name in public, f"wandb.{name} is public but not in __all__"
    assert public - {"__version__"} <= documented, sorted(public - documented)
    assert documented <= public | {"__version__"}, sorted(documented - public)


# --- migration 0011 on a database that already has events ---------------------------------------
def test_migration_0011_backfills_names_notes_and_definitions(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstream.sinks import migrations
    from runstream.sinks.clickhouse import connect

    old = settings.with_overrides(
        clickhouse_database=f"{settings.clickhouse_database}_pre11",
        sink_group=f"{settings.sink_group}-pre11",
    )
    everything = migrations.available()
    monkeypatch.setattr(migrations, "available", lambda: everything[:10])
    assert migrations.migrate(old)[-1] == "0010_alert_deliveries"  # (a sink of that version)
    db = old.clickhouse_database
    try:
        run = wandb.init(project="p", name="before", notes="n0", settings=settings)
        wandb.define_metric("*", step_metric="step_x")
        wandb.define_metric("loss", summary="max", goal="maximize")
        run.name = "after"
        run.notes = "n1"
        wandb.log({"loss": 1.0, "step_x": 3})
        wandb.log({"loss": 2.0, "step_x": 4})
        wandb.finish()
        sink_until(old, lambda c: scalar(old, f"SELECT countIf(type = 'run_finished') FROM "
                                         f"{db}.events") == 1)  # fmt: skip
        assert scalar(old, f"SELECT name FROM {db}.runs_current") == "before"  # 0009's view
        monkeypatch.undo()
        assert migrations.migrate(old)[0] == "0011_run_details"  # and those after it
        expected_runs = [("after", "n1")]
        assert rows(old, f"SELECT name, notes FROM {db}.runs_current") == expected_runs
        defs = rows(old, f"SELECT name, summary, step_metric, goal FROM "
                    f"{db}.metric_definitions_current ORDER BY name")  # fmt: skip
        assert defs == [("*", "", "step_x", ""), ("loss", "max", "", "maximize")]
        summary = orjson.loads(scalar(old, f"SELECT summary FROM {db}.runs_current"))
        assert summary["loss"] == 2.0
        # Repeating the statements (a crash before their record) adds nothing.
        client = connect(old, database="default")
        for statement in everything[10].statements(db):
            client.command(statement)
        assert scalar(old, f"SELECT count() FROM {db}.metric_definitions") == 2
        assert scalar(old, f"SELECT count() FROM {db}.run_updates") == 2
        assert rows(old, f"SELECT name, notes FROM {db}.runs_current") == expected_runs
    finally:
        connect(old, database="default").command(f"DROP DATABASE IF EXISTS {db}")


def test_the_processors_follow_run_updated_and_definitions_without_a_summary() -> None:
    from runstream.processors.aggregates import fold_run, new_run_state, summary_choice
    from runstream.processors.decoding import decode_event
    from runstream.schemas import encode
    from tests.samples import sample_event

    state = new_run_state("vision", "r")
    raws = [sample_event("run_started", seq=0, run_id="r")]
    defined = sample_event("metric_defined", seq=1, run_id="r")
    defined["body"] = {"name": "val/*", "summary": "min"}
    later = sample_event("metric_defined", seq=2, run_id="r")
    later["body"] = {"name": "val/*", "step_metric": "epoch"}  # chooses no summary
    renamed = sample_event("run_updated", seq=3, run_id="r")
    renamed["body"] = {"name": "renamed"}
    noted = sample_event("run_updated", seq=4, run_id="r")
    noted["body"] = {"notes": "only notes"}
    for raw in [*raws, defined, later, renamed, noted]:
        assert fold_run(state, decode_event(encode(raw)))
    assert state["name"] == "renamed"
    assert summary_choice(state, "val/loss") == "min"


# --- generated inputs: summary strings and step metric values -----------------------------------
_HONOURED = {"min": "min", "max": "max", "mean": "mean", "last": "last", "copy": "last"}


@settings_(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(["min", "max", "mean", "last", "best", "copy", "none", "MIN", " max ",
                         "median", "", "p95"]),
        max_size=5,
    ),
    goal=st.sampled_from([None, "minimize", "maximize", "min", "max", "sideways"]),
)  # fmt: skip
def test_the_summary_kind_is_the_first_word_that_can_be_honoured(
    words: list[str], goal: str | None
) -> None:
    from runstream.producers.metric_defs import resolve_goal, resolve_summary

    resolved_goal = resolve_goal(goal)
    expected = None
    for word in (w.strip().lower() for w in words):
        kind = _HONOURED.get(word)
        if word == "best":
            kind = {"minimize": "min", "maximize": "max"}.get(resolved_goal or "")
        if kind is not None:
            expected = kind
            break
    assert resolve_summary(",".join(words), resolved_goal) == expected


@settings_(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.integers(min_value=-(2**64), max_value=2**64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(max_size=3),
    )
)
def test_a_step_metric_value_is_a_step_only_when_a_whole_number_in_range(value: object) -> None:
    import math

    from runstream.producers.metric_defs import as_step

    step = as_step(value)
    whole = (
        not isinstance(value, (bool, str))
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and float(value).is_integer()
        and 0 <= int(value) <= 2**63 - 1
    )
    assert (step is not None) == whole
    if whole:
        assert step == int(value)  # type: ignore[call-overload]
