"""The SDK's default spool directory must never shadow the package (issue 11, round 2, fault 1).

With an editable install (``make install`` runs ``pip install -e``) the package is found by a
finder that setuptools appends to the END of ``sys.meta_path``; Python's PathFinder comes first
and takes a ``runstream/`` directory in the working directory (``sys.path[0]``) as a namespace
package. A spool at ``./runstream`` therefore broke every later ``import runstream`` there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runstream
from runstream.settings import Settings

PACKAGE = Path(runstream.__file__).resolve().parent

# What ``pip install -e`` sets up, pointed at the package under test (not at whichever checkout
# the venv's own editable install names): a meta-path finder after PathFinder, and no
# PYTHONPATH entry for the package.
EDITABLE = f"""
import importlib.util, sys
class _Editable:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "runstream":
            return None
        return importlib.util.spec_from_file_location(
            "runstream", {str(PACKAGE / "__init__.py")!r},
            submodule_search_locations=[{str(PACKAGE)!r}])
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.meta_path.append(_Editable)
"""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RUNSTREAM_DIR")}
    env["RUNSTREAM_MODE"] = "offline"
    env["RUNSTREAM_SYSTEM_METRICS_INTERVAL"] = "0"
    return subprocess.run(
        [sys.executable, "-c", EDITABLE + code],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_default_spool_is_hidden() -> None:
    assert Settings.load(env={}).dir == Path(".runstream")


def test_second_import_after_a_run_in_the_same_directory(tmp_path: Path) -> None:
    first = _python(
        "import runstream\n"
        "run = runstream.init(project='p')\n"
        "run.log({'x': 1.0})\n"
        "run.finish()\n"
        "print(run.settings.dir)\n",
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == ".runstream"
    assert (tmp_path / ".runstream" / "runs").is_dir()
    assert not (tmp_path / "runstream").exists()

    second = _python(
        "import runstream\nprint(runstream.__file__, callable(runstream.init))\n", tmp_path
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [str(PACKAGE / "__init__.py"), "True"]


def test_wandb_shim_dir_dot_keeps_the_package_importable(tmp_path: Path) -> None:
    """Lightning's WandbLogger passes ``dir="."``: the spool goes to ``./.runstream``."""
    first = _python(
        "import runstream.wandb as wandb\n"
        "run = wandb.init(project='p', dir='.')\n"
        "print(run.settings.dir)\n"
        "wandb.finish()\n",
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == ".runstream"
    second = _python("import runstream\nprint(callable(runstream.init))\n", tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "True"


def test_sync_points_at_a_spool_left_under_the_old_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runstream.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNSTREAM_DIR", raising=False)
    (tmp_path / "runstream" / "runs").mkdir(parents=True)
    assert main(["sync", "--kafka", "127.0.0.1:19092", "--timeout", "1"]) == 0  # nothing there
    err = capsys.readouterr().err
    assert "./runstream holds a spool of the old default directory" in err
    assert "`runstream sync runstream`" in err
    assert main(["sync", "runstream", "--kafka", "127.0.0.1:19092", "--timeout", "1"]) == 0
    assert "old default" not in capsys.readouterr().err


def test_sync_of_a_directory_that_does_not_exist_fails_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runstream.cli import main

    missing = tmp_path / "no-such-spool"
    assert main(["sync", str(missing), "--kafka", "127.0.0.1:19092", "--timeout", "1"]) == 2
    assert f"{missing} is not a directory" in capsys.readouterr().err
