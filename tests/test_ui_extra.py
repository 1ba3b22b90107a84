"""The web UI is an extra: without Starlette and uvicorn the rest of runstream works and
``runstream ui`` says which extra to install (issue 13: "in an optional extra")."""

from __future__ import annotations

from tests.test_packaging import run_python


def test_runstream_ui_without_its_extra_names_the_extra() -> None:
    code = """
        import runstream.ui  # importable: Starlette is imported by create_app only
        from runstream.cli import main
        raise SystemExit(main(["ui", "--port", "18089"]))
    """
    result = run_python(code, {"starlette", "uvicorn"})
    assert result.returncode == 1
    assert "pip install 'runstream[ui]'" in result.stderr


def test_create_app_without_starlette_names_the_extra() -> None:
    code = """
        from runstream.errors import MissingExtraError
        from runstream.ui import create_app
        try:
            create_app()
        except MissingExtraError as exc:
            print(exc)
    """
    result = run_python(code, {"starlette"})
    assert result.returncode == 0, result.stderr
    assert "pip install 'runstream[ui]'" in result.stdout


def test_dev_up_leaves_the_ui_out_without_its_extra() -> None:
    code = """
        from runstream.deploy.local.workers import default_workers
        print(",".join(w.name for w in default_workers()))
    """
    result = run_python(code, {"starlette", "uvicorn"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sink,processors,notifier"
