"""Artifacts the wandb way: :class:`Artifact` (files, directories, new files, references,
metadata), and what ``run.log_artifact``, ``run.use_artifact``, ``run.save`` and
``run.log_code`` record: one ``artifact_logged`` event each, with a manifest (``files``) and
digests (docs/schemas.md, docs/sdk.md "Artifacts").

runstream records what an artifact is (names, digests, sizes, where it lies), not its bytes:
nothing is uploaded. In the caller's thread only the call is captured (the entries so far, the
metadata as JSON); the files are read and hashed on the SDK's worker
(:func:`artifact_event_body`).

Digests (``sha256`` throughout): an artifact of one file has the file's content digest (as
``run.log_artifact(path)`` always had); one reference that is not read, ``uri-sha256:`` of its
URI; anything else (a directory, several entries) ``sha256:`` of its manifest, the compact JSON
array ``[[path, digest, size], ...]`` sorted by path, so that two artifacts with the same files
under the same paths have the same digest wherever they lie.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orjson import dumps

from runstream.errors import ArtifactError
from runstream.producers.inputs import safe_str, short_repr
from runstream.producers.manifests import (
    ArtifactSpec,
    Entry,
    Faults,
    artifact_digest,
    artifact_event_body,
    build_manifest,
    default_name,
    remote,
)
from runstream.producers.values import MAX_NAME_LENGTH, Refusals, is_text, to_json

if TYPE_CHECKING:
    from runstream.producers.run import Run

logger = logging.getLogger("runstream")

MAX_METADATA_BYTES = 256_000
"""Encoded bytes of an artifact's metadata kept in its event; larger is left out (warned)."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""wandb's rule for an artifact name (``wandb.sdk.artifacts``' name check): letters, digits,
dashes, underscores and dots; ``team/project/name:alias`` is a reference, not a name."""


def name_fault(name: Any) -> str | None:
    """Why ``name`` cannot be an artifact's name given by the user, or None when it can."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        return f"an artifact name must be a str of 1 to {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return (
            "an artifact name may only contain letters, digits, dashes, underscores and dots "
            "(wandb's rule; 'team/project/name:alias' names an artifact to use_artifact(), "
            "it is not a name)"
        )
    return None


def type_fault(kind: Any) -> str | None:
    """Why ``kind`` cannot be an artifact's type, or None when it can (1 to 128 characters)."""
    if type(kind) is not str or not 0 < len(kind) <= 128:
        return "an artifact type must be a str of 1 to 128 characters (wandb refuses an empty one)"
    return None


class _Staging:
    """The directory ``new_file()`` writes into; deleted once neither the artifact nor a
    logged call of it (waiting for the worker) refers to it any more."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="runstream-artifact-")
        weakref.finalize(self, shutil.rmtree, self.path, True)


class Artifact:
    """``wandb.Artifact(name, type, description=None, metadata=None)``: a named, typed set of
    files, directories and references.

    ``add_file(path, name=None)``, ``add_dir(path, name=None)``, ``new_file(name, mode="w")``
    (a context manager writing into a staging directory), ``add_reference(uri, name=None)``;
    ``metadata`` (a JSON-able dict), ``aliases``, ``name``, ``type``, ``description``, and
    ``digest`` / ``size`` (computed from the files when read: this reads them). Nothing is
    read when an entry is added; entries whose file is missing when the artifact is logged are
    left out with one warning. Other wandb arguments are accepted and ignored.
    """

    def __init__(  # noqa: PLR0917 - wandb's signature
        self,
        name: str,
        type: str,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        incremental: bool = False,
        use_as: str | None = None,
        **ignored: Any,
    ) -> None:
        self.name = name
        self.type = type
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata) if isinstance(metadata, dict) else {}
        self.aliases: list[str] = []
        self._entries: list[Entry] = []
        self._staging: _Staging | None = None
        self._faults = Faults()

    # --- adding ------------------------------------------------------------------------------
    def add_file(
        self,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        is_tmp: bool | None = False,
        **ignored: Any,
    ) -> None:
        """Add one file, under ``name`` (default: its file name) inside the artifact. A second
        file under a name already taken is refused with one warning (wandb raises ValueError;
        runstream never raises into training): the first one stays."""
        source = _path_text(local_path)
        if self._taken(name if name is not None else os.path.basename(source), source):
            return
        self._entries.append(Entry("file", source, name))

    def _taken(self, path: str, source: str) -> bool:
        """True (warned once, counted when the artifact is logged) when a file already has
        ``path`` inside the artifact."""
        for entry in self._entries:
            if entry.kind == "file" and (entry.name or os.path.basename(entry.source)) == path:
                self._faults.report(
                    f"duplicate {path} {source}",
                    source,
                    f"artifact {safe_str(self.name)[:80]!r} already has a file at {path!r} "
                    f"(from {entry.source[:120]!r}); the second one is refused, the first kept",
                    None,
                )
                return True
        return False

    def add_dir(
        self, local_path: str | os.PathLike[str], name: str | None = None, **ignored: Any
    ) -> None:
        """Add every file under a directory, under ``name/`` (default: the artifact's root)."""
        self._entries.append(Entry("dir", _path_text(local_path), name))

    def add_reference(
        self,
        uri: str | os.PathLike[str],
        name: str | None = None,
        checksum: bool = True,
        **ignored: Any,
    ) -> None:
        """Add a reference: a ``file://`` URI or local path is read (its files hashed, as
        wandb does with ``checksum=True``); any other URI (``s3://``...) is recorded as is."""
        self._entries.append(Entry("ref", _path_text(uri), name, bool(checksum)))

    @contextlib.contextmanager
    def new_file(
        self, name: str, mode: str = "w", encoding: str | None = None
    ) -> Iterator[IO[Any]]:
        """Write a new file of the artifact: ``with artifact.new_file("notes.txt") as f:``.
        A name already taken is refused as in :meth:`add_file` (what is written is dropped)."""
        if self._taken(name, f"new_file({name!r})"):
            with open(os.devnull, mode, encoding=encoding) as handle:
                yield handle
            return
        if self._staging is None:
            self._staging = _Staging()
        path = Path(self._staging.path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "b" not in mode and encoding is None:
            encoding = "utf-8"
        with open(path, mode, encoding=encoding) as handle:
            yield handle
        self._entries.append(Entry("file", str(path), name, staged=True))

    def add(self, obj: Any, name: str, **ignored: Any) -> None:
        """wandb stores media objects (a Table) in artifacts; runstream does not yet: the
        object is left out with one warning."""
        logger.warning(
            "runstream: Artifact.add(%s, %r): media objects are not stored in "
            "artifacts by runstream yet; left out",
            type(obj).__name__,
            name,
        )

    # --- reading -----------------------------------------------------------------------------
    def _spec(
        self,
        refusals: Refusals,
        aliases: Any = None,
        use: bool = False,
        type: str | None = None,
        name: str | None = None,
    ) -> ArtifactSpec:
        return ArtifactSpec(
            name=name or safe_str(self.name),
            type=type or safe_str(self.type),
            entries=tuple(self._entries),
            description=None if self.description is None else safe_str(self.description),
            metadata=_metadata(self.metadata, refusals),
            aliases=tuple(
                clean_aliases(
                    [*_alias_items(self.aliases, refusals), *_alias_items(aliases, refusals)],
                    refusals,
                )
            ),
            use=use,
            staging=self._staging,
            faults=self._faults,
        )

    @property
    def manifest(self) -> list[dict[str, Any]]:
        """Entries as ``{"path", "digest", "size"[, "ref"]}``, sorted by path (reads files)."""
        return build_manifest(self._entries, None, self._faults)[0]

    @property
    def digest(self) -> str:
        """The artifact's digest (module docstring); reads its files now."""
        manifest, _ = build_manifest(self._entries, None, self._faults)
        return artifact_digest(self._entries, manifest)

    @property
    def size(self) -> int:
        """Bytes of the artifact's files (reads them now)."""
        return sum(int(e["size"]) for e in self.manifest)

    def download(self, root: str | None = None, **ignored: Any) -> str:
        """The local directory of the artifact's files, when they all lie in one; runstream
        keeps no copy of its own (:class:`ArtifactError` otherwise)."""
        local = [e.source for e in self._entries if e.kind in ("file", "dir")]
        if self._entries and len(local) == len(self._entries):
            return os.path.commonpath([os.path.abspath(p) for p in local])
        raise ArtifactError(
            f"artifact {self.name!r} has no local copy: runstream records artifacts' digests "
            "and where they lie, not their content; read the files from where they were logged"
        )

    def wait(self, *_: Any, **__: Any) -> Artifact:
        return self

    def save(self, *_: Any, **__: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<Artifact {self.name!r} type={self.type!r} {len(self._entries)} entries>"


def _path_text(value: Any) -> str:
    try:
        return str(os.fspath(value))
    except TypeError:
        return safe_str(value)


def _alias_items(aliases: Any, refusals: Refusals) -> list[Any]:
    """``aliases`` as a list: a lone str is one alias (``"best"``, not b, e, s, t)."""
    if aliases is None:
        return []
    if isinstance(aliases, str):
        return [aliases]
    try:
        return list(aliases)
    except Exception:
        refusals.refuse(
            "aliases",
            f"aliases must be a list of strings, not {type(aliases).__name__}",
            "artifact",
        )
        return []


def clean_aliases(aliases: Any, refusals: Refusals) -> list[str]:
    """Aliases as the schema takes them (str names of 1 to 512 characters), in order, once
    each; anything else (``5``, ``None``) is left out with one warning, counted."""
    out: list[str] = []
    for alias in _alias_items(aliases, refusals):
        if not isinstance(alias, str):
            refusals.refuse(
                f"alias {safe_str(alias)[:60]!r}",
                f"an alias must be a str, not {type(alias).__name__}; left out",
                "artifact",
            )
            continue
        text = safe_str(alias)
        if not (0 < len(text) <= MAX_NAME_LENGTH and is_text(text)):
            refusals.refuse(
                f"alias {text[:60]!r}",
                f"an alias must have 1 to {MAX_NAME_LENGTH} characters of text",
                "artifact",
            )
        elif text not in out:
            out.append(text)
    return out


def _metadata(metadata: Any, refusals: Refusals) -> dict[str, Any]:
    if metadata is None:
        return {}
    converted = to_json(metadata, refusals, "artifact metadata")
    if not isinstance(converted, dict):
        refusals.refuse(
            "metadata",
            f"artifact metadata must be a dict, not {type(metadata).__name__}; left out",
            "artifact",
        )
        return {}
    size = len(dumps(converted))
    if size > MAX_METADATA_BYTES:
        refusals.note(
            "metadata",
            f"artifact metadata is {size:,} bytes encoded, over the "
            f"{MAX_METADATA_BYTES:,} one event keeps; left out",
            "size",
        )
        return {}
    return converted


# --- the calls, in the caller's thread ---------------------------------------------------------
def _submit(run: Run, spec: ArtifactSpec, call: str) -> None:
    if run.mode == "disabled":
        return
    if run._finished is not None:
        run._log_after_finish(call)
        return
    run._worker.submit(
        (run._channel, "artifact_logged", time.time(), artifact_event_body, spec, run)
    )


def log_artifact(  # noqa: PLR0917 - run.log_artifact's arguments
    run: Run,
    artifact_or_path: Any,
    name: str | None,
    type: str | None,
    aliases: Any,
    use: bool = False,
) -> Any:
    """``run.log_artifact`` / ``run.use_artifact``: never raises (refusals are counted)."""
    call = "use_artifact()" if use else "log_artifact()"
    try:
        if isinstance(artifact_or_path, Artifact):
            spec = artifact_or_path._spec(run._refusals, aliases, use, type=type, name=name)
            fault = name_fault(spec.name) or type_fault(spec.type)
            if fault is not None:  # wandb raises ValueError at Artifact(); never into training
                run._refusals.refuse(f"artifact {safe_str(spec.name)[:60]}", fault, "artifact")
                return artifact_or_path
            _submit(run, spec, call)
            return artifact_or_path
        try:
            target = os.fspath(artifact_or_path)
        except TypeError:
            kind = artifact_or_path.__class__.__name__
            run._refusals.refuse(
                short_repr(artifact_or_path),
                f"an artifact must be a path, a str or an Artifact, not {kind}",
                "artifact",
            )
            return None
        alias_list = clean_aliases(aliases, run._refusals)
        if use and not _is_location(target):  # a name: "model:v3", "team/proj/model:latest"
            base, _, alias = target.rpartition("/")[2].partition(":")
            hashed = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()
            spec = ArtifactSpec(
                name=base or target,
                type=type or "artifact",
                entries=(),
                aliases=tuple(clean_aliases([alias] if alias else [], run._refusals) + alias_list),
                use=True,
                uri=target,
                digest=f"name-sha256:{hashed}",
            )
            _submit(run, spec, call)
            made = Artifact(base or target, type or "artifact")
            return made
        kind = "artifact" if type is None else type  # "" is refused on the worker, as always
        if name:  # a name given is checked as wandb checks it; none or "": the path's name
            fault = name_fault(name)
            if fault is not None:
                run._refusals.refuse(f"artifact {safe_str(name)[:60]}", fault, "artifact")
                return None
        label = name or default_name(target)
        spec = ArtifactSpec(
            name=label,
            type=kind,
            entries=(Entry("path", target),),
            aliases=tuple(alias_list),
            use=use,
        )
        _submit(run, spec, call)
        made = Artifact(label, kind)
        made._entries.append(Entry("path", target))
        return made
    except Exception as exc:  # a foreign object's methods: never into training
        run._refusals.refuse(
            "artifact", f"the call failed ({type_name(exc)}: {exc}); it is ignored", "artifact"
        )
        return None


def type_name(value: Any) -> str:
    return type(value).__name__


def _is_location(target: str) -> bool:
    return remote(target) or os.path.exists(target.removeprefix("file://"))


def save(run: Run, glob_str: Any, base_path: Any = None, policy: str = "live") -> bool:
    """``wandb.save``: the files matching ``glob_str`` now, as an artifact of type
    ``run_files`` named after the glob (relative to ``base_path``). Never raises."""
    try:
        pattern = _path_text(glob_str)
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.getcwd(), pattern)
        base = os.path.abspath(_path_text(base_path)) if base_path is not None else None
        if base is None:
            base = os.path.dirname(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0])
        name = os.path.relpath(pattern, base) if pattern.startswith(base) else pattern
        spec = ArtifactSpec(
            name=name[-MAX_NAME_LENGTH:],
            type="run_files",
            entries=(Entry("glob", pattern, None, base),),
            metadata={"policy": safe_str(policy), "glob": safe_str(glob_str)},
        )
        _submit(run, spec, "save()")
    except Exception as exc:
        run._refusals.refuse(
            "save", f"the call failed ({type_name(exc)}: {exc}); it is ignored", "artifact"
        )
        return False
    return True


def _is_python(path: str, root: str = "") -> bool:
    return path.endswith(".py")


_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages", "wandb", "venv", "runstream-spool"}


def _skipped(path: str, root: str = "") -> bool:
    parts = Path(os.path.relpath(path, root) if root else path).parts
    return any((p.startswith(".") and p not in (".", "..")) or p in _SKIPPED_DIRS for p in parts)


def log_code(
    run: Run,
    root: Any = ".",
    name: str | None = None,
    include_fn: Callable[..., bool] = _is_python,
    exclude_fn: Callable[..., bool] = _skipped,
) -> Artifact | None:
    """``run.log_code``: the source files under ``root`` (``.py`` by default; hidden
    directories, ``__pycache__``, virtualenvs and the spool left out) as an artifact of type
    ``code``. The functions are called as wandb calls them, ``fn(path, root)``. Never raises."""
    try:
        top = os.path.abspath(_path_text(root))
        spool = os.path.abspath(str(run.settings.dir))
        label = name or f"source-{run.project}-{run.id}"
        spec = ArtifactSpec(
            name=label[:MAX_NAME_LENGTH],
            type="code",
            entries=(Entry("code", top, None, (include_fn, exclude_fn, spool)),),
        )
        _submit(run, spec, "log_code()")
        made = Artifact(label, "code")
        made._entries.append(Entry("code", top, None, (include_fn, exclude_fn, spool)))
        return made
    except Exception as exc:
        run._refusals.refuse(
            "log_code", f"the call failed ({type_name(exc)}: {exc}); it is ignored", "artifact"
        )
        return None
