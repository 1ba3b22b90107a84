"""What ``init`` and the other calls take besides metrics, made into what the schema holds:
names, tags and the config. Runs in the caller's thread; never raises for a value (what cannot be
stored as given is changed or refused with one warning and counted in :class:`Refusals`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runstream.producers.values import MAX_NAME_LENGTH, Refusals, is_text, repair_text, to_json


def safe_str(value: Any) -> str:
    if type(value) is str:
        return value
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__} whose str() raised>"
    return text if type(text) is str else f"<{type(value).__name__}>"


def repair(text: str) -> str:
    return text if is_text(text) else repair_text(text)


def is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH and is_text(value)


def text_or_none(value: Any, what: str, refusals: Refusals) -> str | None:
    """``name``, ``group``, ``job_type``, ``notes``: text or None, never a reason to lose the
    run_started event (the schema types them as strings)."""
    if value is None or (type(value) is str and is_text(value)):
        return value
    if type(value) is str:
        refusals.note(what, f"{what} is not valid Unicode text (a lone surrogate); stored "
                      "with its lone surrogates escaped as \\udXXX", "name")  # fmt: skip
        return repair_text(value)
    text = repair(safe_str(value))
    refusals.note(what, f"{what} must be a string, not {type(value).__name__}; stored as "
                  f"{text[:60]!r}", "name")  # fmt: skip
    return text


def clean_tags(tags: Any, refusals: Refusals) -> list[str]:
    """Tags as the schema takes them (1 to 512 characters of text each); others refused."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    try:
        given = list(tags)
    except Exception:
        refusals.refuse("tags", f"tags must be a list of strings, not {type(tags).__name__}",
                        "name")  # fmt: skip
        return []
    out = []
    for tag in given:
        text = repair(safe_str(tag))
        if 0 < len(text) <= MAX_NAME_LENGTH:
            if text is not tag and type(tag) is not str:
                refusals.note(f"tag {text[:60]!r}", f"tag {text[:60]!r} is a "
                              f"{type(tag).__name__}; stored as its text", "name")  # fmt: skip
            elif text is not tag:
                refusals.note(f"tag {text[:60]!r}", f"tag {text[:60]!r} is not valid Unicode "
                              "text; stored with its lone surrogates escaped", "name")  # fmt: skip
            out.append(text)
        else:
            refusals.refuse(f"tag {text[:60]!r}", f"a tag must have 1 to {MAX_NAME_LENGTH} "
                            "characters", "name")  # fmt: skip
    return out


def config_dict(config: Any, refusals: Refusals) -> dict[str, Any]:
    """``init(config=...)`` as a JSON dict: a mapping, or an object with attributes (such as
    ``argparse.Namespace``); never raises (what cannot be read is warned about and left out)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        try:
            config = vars(config)
        except TypeError:
            refusals.refuse("config", f"config must be a dict, not {type(config).__name__}; "
                            "it is left out", "config")  # fmt: skip
            return {}
    converted = to_json(config, refusals, "config")
    if not isinstance(converted, dict):  # the mapping could not be read at all
        return {}
    return converted


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text[:limit]
