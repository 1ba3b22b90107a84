"""The SDK installs light; parts with missing extras say which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCK = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"blocked {{name}}", name=name)
            return None
    sys.meta_path.insert(0, Block())
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda n, *a: None if n in {blocked!r} else _find_spec(n, *a)
    """
)


def run_python(code: str, blocked: set[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=blocked) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_sdk_imports_without_the_heavy_parts() -> None:
    code = """
        import runstream, sys
        heavy = {"clickhouse_connect", "faust", "chdb", "aiokafka", "psutil"} & set(sys.modules)
        assert not heavy, heavy
        assert "confluent_kafka" not in sys.modules  # loaded by the worker, on first use
        print("ok")
    """
    result = run_python(code, {"clickhouse_connect", "faust", "chdb"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("runstream.sinks", "clickhouse_connect", "sinks"),
        ("runstream.processors", "faust", "processors"),
    ],
)
def test_missing_extra_names_the_extra(module: str, blocked: str, extra: str) -> None:
    result = run_python(f"import {module}", {blocked})
    assert result.returncode != 0
    assert f"pip install 'runstream[{extra}]'" in result.stderr


def test_cli_says_which_extra_to_install() -> None:
    code = """
        from runstream.cli import main
        raise SystemExit(main(["query", "SELECT 1"]))
    """
    result = run_python(code, {"clickhouse_connect"})
    assert result.returncode == 1
    assert "pip install 'runstream[sinks]'" in result.stderr
