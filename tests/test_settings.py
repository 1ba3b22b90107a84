from __future__ import annotations

from pathlib import Path

import pytest

from runstream.errors import SettingsError
from runstream.settings import Settings


def test_defaults() -> None:
    settings = Settings.load(env={})
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.clickhouse_url == "http://127.0.0.1:8123"
    assert settings.kafka_host_port == ("127.0.0.1", 9092)
    assert settings.clickhouse_host_port == ("127.0.0.1", 8123)


def test_arguments_beat_environment_beats_defaults() -> None:
    env = {"RUNSTREAM_PROJECT": "from-env", "RUNSTREAM_SINK_BATCH_ROWS": "123"}
    assert Settings.load(env=env).project == "from-env"
    assert Settings.load(env=env).sink_batch_rows == 123
    assert Settings.load(env=env, project="from-arg").project == "from-arg"
    assert Settings.load(env=env, project=None).project == "from-env"  # None means "not given"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="RUNSTREAM_SINK_BATCH_ROWS"):
        Settings.load(env={"RUNSTREAM_SINK_BATCH_ROWS": "many"})
    with pytest.raises(SettingsError, match="RUNSTREAM_KAFKA_BOOTSTRAP"):
        Settings.load(env={"RUNSTREAM_KAFKA_BOOTSTRAP": "localhost"})
    with pytest.raises(SettingsError, match="RUNSTREAM_MODE"):
        Settings.load(env={"RUNSTREAM_MODE": "sometimes"})


def test_bad_argument_and_unknown_setting_are_refused() -> None:
    with pytest.raises(SettingsError, match="clickhouse_url"):
        Settings.load(env={}, clickhouse_url="ftp://x")
    with pytest.raises(SettingsError, match="unknown setting"):
        Settings.load(env={}, kafka="x:1")


def test_paths_expand_user() -> None:
    settings = Settings.load(env={"RUNSTREAM_HOME": "~/somewhere"})
    assert settings.home == Path.home() / "somewhere"


def test_with_overrides_validates() -> None:
    base = Settings.load(env={})
    assert base.with_overrides(project="p").project == "p"
    with pytest.raises(SettingsError):
        base.with_overrides(topic_partitions=0)
