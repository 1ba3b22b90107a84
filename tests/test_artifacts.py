"""Artifacts the wandb way: wandb.Artifact (files, directories, new files, references,
metadata), log_artifact with aliases, use_artifact, wandb.save and run.log_code, recorded as
artifact_logged events with digests and sizes, and queryable in ClickHouse."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstream
from runstream import wandb
from runstream.errors import RunstreamError
from runstream.schemas.limits import MAX_EVENT_BYTES
from runstream.settings import Settings
from tests.helpers import records_of, scalar, sink_until
from tests.test_sdk_local import of_type, offline_settings, spooled


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_digest(entries: list[tuple[str, str, int]]) -> str:
    """The documented rule, written again: sha256 of the compact JSON [[path, digest, size]...]
    sorted by path."""
    rows = [list(e) for e in sorted(entries)]
    return sha(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode())


def files(tmp_path: Path) -> dict[str, bytes]:
    content = {
        "model.pt": b"weights" * 100,
        "data/train.csv": b"a,b\n1,2\n",
        "data/sub/val.csv": b"a,b\n3,4\n5,6\n",
        "src/train.py": b"print('train')\n",
        "src/util.py": b"X = 1\n",
        "src/notes.txt": b"not code",
        "src/.hidden/secret.py": b"no",
        "src/__pycache__/util.cpython-312.pyc": b"\0",
        "out/a.ckpt": b"1",
        "out/b.ckpt": b"22",
        "out/c.log": b"333",
    }
    for name, data in content.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return content


def log_everything(run: Any, tmp_path: Path) -> dict[str, Any]:
    """Every kind of artifact call; returns what the test expects of each (by name)."""
    content = files(tmp_path)
    art = wandb.Artifact("checkpoint", "model", description="epoch 3", metadata={"acc": 0.91})
    art.add_file(str(tmp_path / "model.pt"))
    art.add_dir(str(tmp_path / "data"), name="data")
    with art.new_file("config.json") as f:
        f.write('{"lr": 0.1}')
    art.add_reference("s3://bucket/raw/train.tar")
    art.metadata["epoch"] = 3
    run.log_artifact(art, aliases=["best", "epoch-3"])

    single = wandb.Artifact("weights", "model")
    single.add_file(str(tmp_path / "model.pt"), name="w.pt")
    wandb.log_artifact(single)

    run.log_artifact(tmp_path / "data", type="dataset")  # a directory by path
    run.log_artifact(str(tmp_path / "model.pt"), name="raw-model", type="model")
    run.use_artifact("team/vision/tokenizer:v2", type="tokenizer")
    used = wandb.Artifact("train-set", "dataset")
    used.add_dir(str(tmp_path / "data"))
    wandb.use_artifact(used, aliases=["latest"])
    wandb.save(str(tmp_path / "out" / "*.ckpt"), base_path=str(tmp_path))
    run.log_code(str(tmp_path / "src"), name="source")

    ref = ("s3://bucket/raw/train.tar", 0)
    ref_digest = "uri-sha256:" + hashlib.sha256(ref[0].encode()).hexdigest()
    checkpoint = [
        ("model.pt", sha(content["model.pt"]), 700),
        ("data/train.csv", sha(content["data/train.csv"]), 8),
        ("data/sub/val.csv", sha(content["data/sub/val.csv"]), 12),
        ("config.json", sha(b'{"lr": 0.1}'), 11),
        ("train.tar", ref_digest, 0),
    ]
    data = [
        ("train.csv", sha(content["data/train.csv"]), 8),
        ("sub/val.csv", sha(content["data/sub/val.csv"]), 12),
    ]
    ckpts = [("out/a.ckpt", sha(b"1"), 1), ("out/b.ckpt", sha(b"22"), 2)]
    code = [
        ("train.py", sha(content["src/train.py"]), 15),
        ("util.py", sha(content["src/util.py"]), 6),
    ]
    name_digest = "name-sha256:" + hashlib.sha256(b"team/vision/tokenizer:v2").hexdigest()
    return {
        "checkpoint": dict(type="model", digest=manifest_digest(checkpoint), size=731,
                           aliases=["best", "epoch-3"], metadata={"acc": 0.91, "epoch": 3},
                           description="epoch 3", files=sorted(checkpoint), use=False),
        "weights": dict(type="model", digest=sha(content["model.pt"]), size=700, aliases=[],
                        files=[("w.pt", sha(content["model.pt"]), 700)], use=False),
        "data": dict(type="dataset", digest=manifest_digest(data), size=20, aliases=[],
                     files=sorted(data), use=False,
                     uri=(tmp_path / "data").resolve().as_uri()),
        "raw-model": dict(type="model", digest=sha(content["model.pt"]), size=700, files=[],
                          uri=(tmp_path / "model.pt").resolve().as_uri(), use=False),
        "tokenizer": dict(type="tokenizer", digest=name_digest, size=0, aliases=["v2"],
                          uri="team/vision/tokenizer:v2", files=[], use=True),
        "train-set": dict(type="dataset", digest=manifest_digest(data), size=20,
                          aliases=["latest"], files=sorted(data), use=True),
        "out/*.ckpt": dict(type="run_files", digest=manifest_digest(ckpts), size=3,
                           files=sorted(ckpts), use=False,
                           metadata={"policy": "live", "glob": str(tmp_path / "out" / "*.ckpt")}),
        "source": dict(type="code", digest=manifest_digest(code), size=21, files=sorted(code),
                       use=False, uri=(tmp_path / "src").resolve().as_uri()),
    }  # fmt: skip


@pytest.mark.integration
def test_every_kind_of_artifact_lands_in_clickhouse_with_its_digests_and_sizes(
    settings: Settings, tmp_path: Path
) -> None:
    run = runstream.init(settings=settings, project="arts")
    expected = log_everything(run, tmp_path)
    result = run.finish()
    assert result.refused == 0

    db = settings.clickhouse_database
    sink_until(settings, lambda c: scalar(settings, f"SELECT count() FROM {db}.artifacts") == 8)
    rows = records_of(settings, f"SELECT * FROM {db}.artifacts WHERE run_id = {{r:String}} "
                      "ORDER BY seq", r=run.id)  # fmt: skip
    assert [r["name"] for r in rows] == list(expected)
    for row in rows:
        want = expected[row["name"]]
        assert row["type"] == want["type"], row["name"]
        assert row["digest"] == want["digest"], row["name"]
        assert row["size"] == want["size"], row["name"]
        assert row["use"] == int(want["use"]), row["name"]
        assert row["aliases"] == want.get("aliases", []), row["name"]
        assert json.loads(row["metadata"]) == want.get("metadata", {}), row["name"]
        assert row["description"] == want.get("description", "")
        assert [(f["path"], f["digest"], f["size"]) for f in row["files"]] == want["files"]
        assert row["file_count"] == (len(want["files"]) or None), row["name"]
        if "uri" in want:
            assert row["uri"] == want["uri"], row["name"]
    refs = [f["ref"] for f in rows[0]["files"]]
    assert refs == ["", "", "", "", "s3://bucket/raw/train.tar"]
    # The query docs/sql.md gives: which runs used an artifact a run logged.
    assert records_of(
        settings,
        f"SELECT name, run_id FROM {db}.artifacts WHERE use = 1 AND digest IN "
        f"(SELECT digest FROM {db}.artifacts WHERE use = 0) ORDER BY name",
    ) == [{"name": "train-set", "run_id": run.id}]


def test_the_artifacts_digest_is_the_one_logged_and_download_points_at_the_files(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path / "runs")
    files(tmp_path)
    art = runstream.Artifact("d", "dataset")
    art.add_dir(tmp_path / "data")
    assert art.size == 20 and len(art.manifest) == 2
    run = runstream.init(settings=settings)
    returned = run.log_artifact(art)
    run.finish()
    [event] = of_type(spooled(settings, run.id), "artifact_logged")
    assert returned is art and event["body"]["digest"] == art.digest
    assert art.download() == str(tmp_path / "data")
    with pytest.raises(RunstreamError, match="no local copy"):
        run.use_artifact("model:v1").download()


def test_a_huge_manifest_is_cut_to_fit_one_event_and_the_digest_covers_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = offline_settings(tmp_path / "runs")
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12_000):
        (folder / f"shard-{i:05d}-{'x' * 40}.bin").write_bytes(b"%d" % i)
    run = runstream.init(settings=settings)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        run.log_artifact(folder, type="dataset")
        run.finish()
    [event] = of_type(spooled(settings, run.id), "artifact_logged")
    body = event["body"]
    assert len(orjson.dumps(event)) <= MAX_EVENT_BYTES
    assert body["file_count"] == 12_000 and 0 < len(body["files"]) < 12_000
    assert body["size"] == sum(len(b"%d" % i) for i in range(12_000))
    full = runstream.Artifact("many", "dataset")
    full.add_dir(folder)
    assert body["digest"] == full.digest
    assert run.refused_by_kind == {"size": 1}
    assert sum("has 12,000 files; the first" in r.getMessage() for r in caplog.records) == 1


def test_what_cannot_be_read_is_refused_never_raised(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path / "runs")
    files(tmp_path)
    run = runstream.init(settings=settings)
    partial = wandb.Artifact("partial", "model")
    partial.add_file(str(tmp_path / "model.pt"))
    partial.add_file(str(tmp_path / "missing.pt"))
    run.log_artifact(partial)  # the readable part is recorded, the missing file refused
    run.log_artifact(tmp_path / "nothing-here")  # nothing readable: refused whole
    run.log_artifact(12345)  # type: ignore[arg-type]
    run.log_artifact(wandb.Artifact("m", "model", metadata={"x": object()}), aliases=[""])
    huge = wandb.Artifact("big-meta", "model", metadata={"blob": "x" * 300_000})
    run.log_artifact(huge)
    wandb.save(str(tmp_path / "out" / "*.nothing"))
    run.finish()
    bodies = {e["body"]["name"]: e["body"] for e in of_type(spooled(settings, run.id),
                                                             "artifact_logged")}  # fmt: skip
    assert sorted(bodies) == ["*.nothing", "big-meta", "m", "partial"]
    assert [f["path"] for f in bodies["partial"]["files"]] == ["model.pt"]
    assert bodies["m"]["metadata"]["x"].startswith("<object object at")
    assert "metadata" not in bodies["big-meta"]
    nothing = bodies["*.nothing"]  # matched no file: a count of 0, not NULL
    assert nothing["size"] == 0 and nothing["file_count"] == 0 and nothing["files"] == []
    assert run.refused_by_kind == {"artifact": 5, "config": 1, "size": 1}


def test_log_artifact_by_path_keeps_its_old_body_and_a_disabled_run_records_nothing(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path / "runs")
    files(tmp_path)
    run = runstream.init(settings=settings)
    run.log_artifact(tmp_path / "model.pt", "m", "model")  # positional, as before
    run.log_artifact("s3://bucket/data.parquet", name="data", type="dataset")
    run.finish()
    bodies = [e["body"] for e in of_type(spooled(settings, run.id), "artifact_logged")]
    digest = sha(b"weights" * 100)
    uri = "s3://bucket/data.parquet"
    assert bodies == [
        {"name": "m", "type": "model", "digest": digest, "size": 700,
         "uri": (tmp_path / "model.pt").resolve().as_uri()},
        {"name": "data", "type": "dataset", "size": 0, "uri": uri,
         "digest": "uri-sha256:" + hashlib.sha256(uri.encode()).hexdigest()},
    ]  # fmt: skip
    off = runstream.init(settings=settings, mode="disabled")
    assert off.log_artifact(tmp_path / "model.pt") is None
    off.use_artifact("x:v1")
    off.save("*.py")
    off.log_code(".")
    off.watch(object())
    assert off.finish().produced == 0 and off.refused == 0


def test_new_files_are_staged_until_read_and_the_staging_directory_then_goes(
    tmp_path: Path,
) -> None:
    import gc

    settings = offline_settings(tmp_path / "runs")
    run = runstream.init(settings=settings)
    art = wandb.Artifact("model-abc", "model", metadata={"initial_model": True})
    with art.new_file("pytorch_model.bin", mode="wb") as f:  # as transformers' callback does
        f.write(b"\x00\x01" * 50)
    staging = Path(art._staging.path)  # type: ignore[union-attr]
    run.log_artifact(art, aliases=["base_model"])
    del art
    run.finish()
    gc.collect()
    assert not staging.exists()
    [body] = [e["body"] for e in of_type(spooled(settings, run.id), "artifact_logged")]
    assert body["digest"] == sha(b"\x00\x01" * 50) and body["size"] == 100
    assert body["aliases"] == ["base_model"] and body["metadata"] == {"initial_model": True}
