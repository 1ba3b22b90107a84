"""Artifact inputs that are refused, left out or renamed: each with one warning, counted once,
and what is stored agrees with what the call returns (issue 11, round 2, faults 8, 9, 12)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pytest

import runstream
from runstream import wandb
from tests.test_sdk_local import of_type, offline_settings, spooled


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("fault", ["missing file", "file is a dir", "dir is a file"])
def test_an_unreadable_entry_warns_once_and_counts_once(
    fault: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "ok.txt").write_bytes(b"ok")
    (tmp_path / "a-file.txt").write_bytes(b"x")
    (tmp_path / "a-dir").mkdir()
    art = wandb.Artifact("art", "dataset")
    art.add_file(str(tmp_path / "ok.txt"))
    if fault == "missing file":
        art.add_file(str(tmp_path / "missing.txt"))
    elif fault == "file is a dir":
        art.add_file(str(tmp_path / "a-dir"))
    else:
        art.add_dir(str(tmp_path / "a-file.txt"))
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        digest = art.digest
        assert [e["path"] for e in art.manifest] == ["ok.txt"]
        assert art.size == 2
        run.log_artifact(art)
        run.finish()
        assert art.digest == digest
    assert _warnings(caplog, "artifact entry cannot be read") == 1
    assert run.refused_by_kind == {"artifact": 1}
    [event] = of_type(spooled(settings, run.id), "artifact_logged")
    assert event["body"]["digest"] == digest
    assert [f["path"] for f in event["body"]["files"]] == ["ok.txt"]


def test_the_worker_warns_first_then_digest_is_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "ok.txt").write_bytes(b"ok")
    art = wandb.Artifact("art", "dataset")
    art.add_file(str(tmp_path / "ok.txt"))
    art.add_file(str(tmp_path / "missing.txt"))
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log_artifact(art)
        run.finish()
        _ = art.digest, art.manifest
    assert _warnings(caplog, "artifact entry cannot be read") == 1
    assert run.refused_by_kind == {"artifact": 1}


def test_a_second_file_under_a_taken_name_is_refused_and_the_first_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "a.txt").write_bytes(b"first")
    (tmp_path / "b.txt").write_bytes(b"second!")
    art = wandb.Artifact("art", "dataset")
    with caplog.at_level(logging.WARNING, logger="runstream"):
        art.add_file(str(tmp_path / "a.txt"), name="x.txt")
        art.add_file(str(tmp_path / "b.txt"), name="x.txt")  # wandb raises; refused here
        with art.new_file("x.txt") as handle:  # the same name again: dropped
            handle.write("third")
        run = runstream.init(settings=settings)
        run.log_artifact(art)
        run.finish()
    assert [(e["path"], e["size"]) for e in art.manifest] == [("x.txt", 5)]
    assert _warnings(caplog, "already has a file at 'x.txt'") == 2  # two faults, one each
    assert run.refused_by_kind == {"artifact": 2}
    [event] = of_type(spooled(settings, run.id), "artifact_logged")
    assert [(f["path"], f["size"]) for f in event["body"]["files"]] == [("x.txt", 5)]


def test_aliases_a_lone_str_is_one_alias_and_non_text_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "m.pt").write_bytes(b"m")
    run = runstream.init(settings=settings)
    art = wandb.Artifact("model", "model")
    art.add_file(str(tmp_path / "m.pt"))
    art.aliases = "latest"  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log_artifact(art, aliases="best")
        run.log_artifact(tmp_path / "m.pt", name="m2", aliases=[5, "ok"])
        run.finish()
    bodies = {e["body"]["name"]: e["body"] for e in of_type(spooled(settings, run.id),
                                                             "artifact_logged")}  # fmt: skip
    assert bodies["model"]["aliases"] == ["latest", "best"]
    assert bodies["m2"]["aliases"] == ["ok"]
    assert _warnings(caplog, "an alias must be a str, not int; left out") == 1
    assert run.refused_by_kind == {"artifact": 1}


def test_wandbs_name_rule_and_an_empty_type_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "a.txt").write_bytes(b"a")
    run = runstream.init(settings=settings)
    bad_name = wandb.Artifact("a/b:c", type="model")
    bad_name.add_file(str(tmp_path / "a.txt"))
    empty_type = wandb.Artifact("fine-name_1.0", type="")
    empty_type.add_file(str(tmp_path / "a.txt"))
    with caplog.at_level(logging.WARNING, logger="runstream"):
        assert run.log_artifact(bad_name) is bad_name  # never raises, nothing stored
        assert run.log_artifact(empty_type) is empty_type
        assert run.log_artifact(tmp_path / "a.txt", name="x y") is None
        run.finish()
    assert of_type(spooled(settings, run.id), "artifact_logged") == []
    assert _warnings(caplog, "may only contain letters, digits") == 2
    assert _warnings(caplog, "an artifact type must be a str of 1 to 128") == 1
    assert run.refused_by_kind == {"artifact": 3}


def test_log_artifact_by_path_with_an_empty_name_stores_the_name_it_returns(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "a.txt").write_bytes(b"a")
    run = runstream.init(settings=settings)
    made = run.log_artifact(str(tmp_path / "a.txt"), name="")
    remote = run.log_artifact("s3://bucket/dir/data.parquet", name="")
    run.finish()
    names = [e["body"]["name"] for e in of_type(spooled(settings, run.id), "artifact_logged")]
    assert names == [made.name, remote.name] == ["a.txt", "data.parquet"]
    assert run.refused == 0


def test_save_of_no_match_counts_zero_files(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path / "runs")
    run = runstream.init(settings=settings)
    run.save(str(tmp_path / "nomatch*"))
    run.log_artifact(wandb.Artifact("empty", "dataset"))
    run.finish()
    bodies = [e["body"] for e in of_type(spooled(settings, run.id), "artifact_logged")]
    assert [(b["name"], b["file_count"], b["files"]) for b in bodies] == [
        ("nomatch*", 0, []),
        ("empty", 0, []),
    ]


def test_new_files_never_leave_a_uri_into_the_deleted_staging_dir(tmp_path: Path) -> None:
    """transformers' WandbCallback (WANDB_LOG_MODEL=end) copies a temporary directory into the
    artifact with new_file(), then deletes it: the uri is a locator, not a dead file:// path."""
    settings = offline_settings(tmp_path / "runs")
    (tmp_path / "keep.txt").write_bytes(b"k")
    run = runstream.init(settings=settings)
    source = Path(tempfile.mkdtemp(dir=tmp_path))
    (source / "model.safetensors").write_bytes(b"w" * 10)
    staged = wandb.Artifact("model-abc", "model")
    for file in source.iterdir():
        with staged.new_file(file.name, mode="wb") as handle:
            handle.write(file.read_bytes())
    shutil.rmtree(source)
    run.log_artifact(staged)
    mixed = wandb.Artifact("mixed", "model")
    mixed.add_file(str(tmp_path / "keep.txt"))
    with mixed.new_file("notes.txt") as handle:
        handle.write("n")
    run.log_artifact(mixed)
    run.finish()
    del staged, mixed
    bodies = {e["body"]["name"]: e["body"] for e in of_type(spooled(settings, run.id),
                                                             "artifact_logged")}  # fmt: skip
    assert bodies["model-abc"]["uri"] == "artifact://model-abc"
    assert [f["path"] for f in bodies["model-abc"]["files"]] == ["model.safetensors"]
    assert bodies["mixed"]["uri"] == (tmp_path / "keep.txt").resolve().as_uri()
    assert [f["path"] for f in bodies["mixed"]["files"]] == ["keep.txt", "notes.txt"]
