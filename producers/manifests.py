"""The worker's side of artifacts: reading and hashing what an artifact holds into its manifest
and the ``artifact_logged`` body (docs/sdk.md "Artifacts"; the digest rules are in
``producers/artifacts.py``). Runs on the SDK's worker thread, never in the training loop, except
when user code reads ``Artifact.digest`` / ``.size`` / ``.manifest``.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from orjson import dumps

from runstream.producers.values import MAX_NAME_LENGTH, Refusals
from runstream.schemas.limits import MAX_EVENT_BYTES

if TYPE_CHECKING:
    from runstream.producers.run import Run

logger = logging.getLogger("runstream")

MANIFEST_ROOM = MAX_EVENT_BYTES - 64_000
"""Bytes of one event for the manifest and the other fields (the envelope needs far less)."""


_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing added to an artifact: ``kind`` is file, dir, ref, glob or code."""

    kind: str
    source: str
    name: str | None = None
    extra: Any = None
    staged: bool = False  # written by new_file() into runstream's staging directory


class Faults:
    """What one artifact has warned about and counted: one warning per fault wherever it is
    found (``add_file``, ``digest``, ``manifest``, ``log_artifact``), and one count in the run
    that logs it. Thread-safe (the caller's thread and the SDK's worker both report)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._counted: set[str] = set()
        self.pending: list[tuple[str, str, str]] = []  # (key, name, reason) found before a run

    def report(self, key: str, name: str, reason: str, refusals: Refusals | None) -> None:
        """A fault of the artifact: warned the first time, counted in ``refusals`` (the run's)
        the first time a run sees it; ``refusals=None`` (no run yet) only warns."""
        with self._lock:
            warn = key not in self._warned
            self._warned.add(key)
            count = refusals is not None and key not in self._counted
            if count:
                self._counted.add(key)
            elif refusals is None and warn:
                self.pending.append((key, name, reason))
        if count and refusals is not None:
            refusals.tally("artifact")
        if warn:
            logger.warning("runstream: not logging %s: %s (warned once)", repr(name)[:80], reason)

    def count_pending(self, refusals: Refusals) -> None:
        """Count, in the run logging the artifact, the faults found before (not warned again)."""
        for key, name, reason in list(self.pending):
            self.report(key, name, reason, refusals)


@dataclass(frozen=True)
class ArtifactSpec:
    """An artifact as it was at the call (what the worker reads)."""

    name: str | None
    type: str
    entries: tuple[Entry, ...]
    description: str | None = None
    metadata: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    use: bool = False
    uri: str | None = None  # with digest: what is named, not read (use_artifact("model:v3"))
    digest: str | None = None
    staging: Any = None  # keeps new_file()'s directory alive until the worker has read it
    faults: Faults | None = None  # the artifact's own (Artifact objects): one warning per fault


# --- on the worker -----------------------------------------------------------------------------
def _file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def _join(prefix: str | None, rel: str) -> str:
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def _walk(
    top: str,
    keep: Callable[[str], bool] | None = None,
    skip_dir: Callable[[str], bool] | None = None,
) -> list[str]:
    found: list[str] = []
    for here, dirs, files in os.walk(top):
        if skip_dir is not None:
            dirs[:] = [d for d in dirs if not skip_dir(os.path.join(here, d))]
        dirs.sort()
        for file in sorted(files):
            path = os.path.join(here, file)
            if os.path.isfile(path) and (keep is None or keep(path)):
                found.append(path)
    return found


def _call(fn: Callable[..., bool], path: str, root: str) -> bool:
    try:
        arity = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        arity = 2
    return bool(fn(path, root) if arity >= 2 else fn(path))


def _expand(entry: Entry) -> list[dict[str, Any]]:
    """The manifest entries of one added thing; raises OSError when it cannot be read."""
    kind, source = entry.kind, entry.source
    if kind == "ref":
        local = None if remote(source) else source.removeprefix("file://")
        if local is None or not entry.extra:
            hashed = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
            path = entry.name or source.rstrip("/").rsplit("/", 1)[-1] or source
            return [{"path": path, "digest": f"uri-sha256:{hashed}", "size": 0, "ref": source}]
        out = _expand(Entry("path", local, entry.name))
        for item in out:
            item["ref"] = source
        return out
    if kind == "path":  # log_artifact(path): a file, a directory or a remote URI
        if remote(source):
            return _expand(Entry("ref", source, entry.name, False))
        on_disk = Path(source.removeprefix("file://")).expanduser()
        if on_disk.is_dir():
            return _expand(Entry("dir", str(on_disk), entry.name))
        return _expand(Entry("file", str(on_disk), entry.name or on_disk.name))
    if kind == "file":
        digest, size = _file_digest(source)
        return [{"path": entry.name or os.path.basename(source), "digest": digest, "size": size}]
    if kind == "dir":
        if not os.path.isdir(source):
            raise FileNotFoundError(f"no such directory: {source}")
        files = _walk(source)
        return [
            _described(p, _join(entry.name, Path(p).relative_to(source).as_posix())) for p in files
        ]
    if kind == "glob":
        base = entry.extra
        files = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        return [_described(p, Path(os.path.relpath(p, base)).as_posix()) for p in files]
    if kind == "code":
        include, exclude, spool = entry.extra
        root = source
        if not os.path.isdir(root):
            raise FileNotFoundError(f"no such directory: {root}")

        def skip_dir(path: str) -> bool:
            return os.path.abspath(path) == spool or _call(exclude, path, root)

        def keep(path: str) -> bool:
            return _call(include, path, root) and not _call(exclude, path, root)

        files = _walk(root, keep, skip_dir)
        return [_described(p, Path(p).relative_to(root).as_posix()) for p in files]
    raise ValueError(f"unknown artifact entry kind {kind!r}")


def _described(path: str, name: str) -> dict[str, Any]:
    digest, size = _file_digest(path)
    return {"path": name, "digest": digest, "size": size}


def build_manifest(
    entries: tuple[Entry, ...] | list[Entry],
    refusals: Refusals | None,
    faults: Faults | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifest (sorted by path; a later entry of the same path wins) and the sources that
    could not be read (each refused: warned once per artifact through ``faults``, counted in
    ``refusals``, the run's; ``None`` when user code reads ``Artifact.digest``)."""
    by_path: dict[str, dict[str, Any]] = {}
    unread: list[str] = []
    for entry in entries:
        try:
            items = _expand(entry)
        except OSError as exc:
            reason = f"artifact entry cannot be read: {exc}"
            name = entry.source[:200]
            if faults is not None:
                faults.report(f"unread {entry.kind} {entry.source}", name, reason, refusals)
            elif refusals is not None:
                refusals.refuse(name, reason, "artifact")
            unread.append(entry.source)
            continue
        for item in items:
            by_path[item["path"]] = item
    return [by_path[p] for p in sorted(by_path)], unread


def manifest_digest(manifest: list[dict[str, Any]]) -> str:
    """``sha256:`` of the compact JSON ``[[path, digest, size], ...]`` (sorted by path)."""
    rows = [[e["path"], e["digest"], e["size"]] for e in manifest]
    return f"sha256:{hashlib.sha256(dumps(rows)).hexdigest()}"


def artifact_digest(entries: Any, manifest: list[dict[str, Any]]) -> str:
    """One file: its content digest; one unread reference: its URI digest; else the
    manifest's (module docstring)."""
    if len(manifest) == 1 and len(entries) == 1 and _single_file(entries[0]):
        return str(manifest[0]["digest"])
    return manifest_digest(manifest)


def default_name(source: str) -> str:
    """The name of an artifact logged by path without one: the path's (or URI's) last part,
    "artifact" when it has none. ``log_artifact`` returns an object of this same name."""
    path = source.rstrip("/")
    scheme = urlsplit(path).scheme
    name = (
        path.rsplit("/", 1)[-1]
        if scheme and len(scheme) > 1
        else Path(path.removeprefix("file://")).expanduser().name
    )
    return name or "artifact"


def remote(source: str) -> bool:
    scheme = urlsplit(source).scheme
    return bool(scheme) and len(scheme) > 1 and scheme != "file"  # C:\\ is a drive, not a scheme


def _single_file(entry: Entry) -> bool:
    """True for an entry that stands for one file (or one remote object), not a directory."""
    if entry.kind == "file":
        return True
    if entry.kind in ("path", "ref"):
        return remote(entry.source) or not os.path.isdir(entry.source.removeprefix("file://"))
    return False


def _uri(entries: tuple[Entry, ...], name: str) -> str:
    """Where the artifact lies: one source's URI, the directory all local sources share, or
    the first remote source's URI; "" for a mix of both. Files written by ``new_file()`` lie in
    a staging directory deleted once read, so they never give the URI: an artifact of only such
    files gets the locator ``artifact://<name>`` (its manifest says what it holds)."""
    kept = tuple(e for e in entries if not e.staged)
    if entries and not kept:
        return f"artifact://{name}"
    entries = kept
    remotes = [e.source for e in entries if remote(e.source)]
    local = [
        e.extra if e.kind == "glob" else e.source.removeprefix("file://")
        for e in entries
        if not remote(e.source)
    ]
    if local and not remotes:
        paths = [os.path.abspath(os.path.expanduser(p)) for p in local]
        common = paths[0] if len(paths) == 1 else os.path.commonpath(paths)
        try:
            return Path(common).resolve().as_uri()
        except ValueError:
            return common
    if remotes and not local:
        return remotes[0]  # several remote sources: the first (each is in files[].ref)
    return ""


def artifact_event_body(spec: ArtifactSpec, run: Run) -> dict[str, Any] | None:
    """The ``artifact_logged`` body: reads and hashes the files (worker thread)."""
    refusals = run._refusals
    if spec.faults is not None:
        spec.faults.count_pending(refusals)
    manifest, unread = build_manifest(spec.entries, refusals, spec.faults)
    if unread and not manifest and spec.entries:
        return None  # nothing of it could be read: refused above
    metadata = dict(spec.metadata or {})
    if spec.uri is not None and spec.digest is not None:  # named, not read ("model:v3")
        body: dict[str, Any] = {
            "name": spec.name,
            "type": spec.type,
            "digest": spec.digest,
            "size": 0,
            "uri": spec.uri,
        }
    else:
        first = spec.entries[0] if spec.entries else None
        name = spec.name
        if not name and first is not None:
            name = default_name(first.source)
        body = {
            "name": name or "artifact",
            "type": spec.type,
            "digest": artifact_digest(spec.entries, manifest),
            "size": sum(int(e["size"]) for e in manifest),
            "uri": _uri(spec.entries, name or "artifact"),
        }
        if spec.type == "run_files" and not manifest:
            refusals.note(
                f"save {name}",
                f"save({metadata.get('glob', name)!r}) matches no "
                "file now (runstream reads the files at the call); recorded with an "
                "empty manifest",
                "artifact",
            )
    if not _valid_name_and_type(body, refusals):
        return None
    if spec.aliases:
        body["aliases"] = list(spec.aliases)
    if metadata:
        body["metadata"] = metadata
    if spec.description:
        body["description"] = spec.description
    if spec.use:
        body["use"] = True
    # log_artifact(path) of one file keeps the body it always had; anything else lists files.
    one_path = len(spec.entries) == 1 and spec.entries[0].kind == "path"
    named = spec.uri is not None and spec.digest is not None  # nothing read: no count
    # What was read has a count, 0 included (save("nomatch*") matched no file), never NULL.
    if not named and not (one_path and _single_file(spec.entries[0])):
        body["file_count"] = len(manifest)
        body["files"] = _fitting(manifest, MANIFEST_ROOM - len(dumps(body)), body, refusals)
    return body


def _fitting(
    manifest: list[dict[str, Any]], room: int, body: dict[str, Any], refusals: Refusals
) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    used = 0
    for entry in manifest:
        size = len(dumps(entry)) + 1
        if used + size > room:
            refusals.note(
                f"artifact {body['name']}",
                f"artifact {body['name'][:80]!r} has "
                f"{len(manifest):,} files; the first {len(kept):,} fit one event's "
                "manifest (file_count says how many there are; the digest covers "
                "all)",
                "size",
            )
            break
        kept.append(entry)
        used += size
    return kept


def _valid_name_and_type(body: dict[str, Any], refusals: Refusals) -> bool:
    name, kind = body["name"], body["type"]
    if not (type(name) is str and 0 < len(name) <= MAX_NAME_LENGTH):
        refusals.refuse(
            str(name)[:60],
            f"an artifact name must have 1 to {MAX_NAME_LENGTH} characters",
            "artifact",
        )
        return False
    if not (type(kind) is str and 0 < len(kind) <= 128):
        refusals.refuse(name[:60], "an artifact type must have 1 to 128 characters", "artifact")
        return False
    return True
