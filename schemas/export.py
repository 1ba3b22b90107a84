"""Export the event schema as JSON Schema files, for producers written in other languages.

python -m runstream.schemas.export            # write schemas/json/*.schema.json
python -m runstream.schemas.export --check    # exit 1 if the files are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from runstream.schemas.events import EVENT_MODELS, SCHEMA_VERSION, Event

JSON_DIR = Path(__file__).parent / "json"
_ID_BASE = "https://runstream.dev/schemas/v{v}/"


def _document(schema: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": _ID_BASE.format(v=SCHEMA_VERSION) + f"{name}.schema.json",
        "title": title,
        **schema,
    }


def render() -> dict[str, str]:
    """File name -> file content for every exported schema."""
    files: dict[str, str] = {}
    for type_name, model in EVENT_MODELS.items():
        schema = model.model_json_schema(mode="serialization")
        files[f"{type_name}.schema.json"] = _dump(_document(schema, type_name, model.__name__))
    union = TypeAdapter(Event).json_schema(mode="serialization")
    files["event.schema.json"] = _dump(_document(union, "event", "Event"))
    return files


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of files that are missing, different, or no longer produced."""
    wanted = render()
    stale = [name for name, text in wanted.items() if _read(directory / name) != text]
    extra = [p.name for p in directory.glob("*.schema.json") if p.name not in wanted]
    return sorted(stale + extra)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def write(directory: Path = JSON_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for path in directory.glob("*.schema.json"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    parser.add_argument("--dir", type=Path, default=JSON_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.dir)
        if stale:
            print(
                f"stale JSON Schema files in {args.dir}: {', '.join(stale)}\n"
                "regenerate them with: python -m runstream.schemas.export",
                file=sys.stderr,
            )
            return 1
        return 0
    for name in write(args.dir):
        print(args.dir / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
