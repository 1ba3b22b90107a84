"""The read side's terminal commands (``runstream export``, ``tail``, ``runs ls``, ``runs show``)
and their shared output (:mod:`runstream.read.cli.output`). ``runstream.cli`` only registers them
(:func:`add_read_parsers`); each command's logic lives in its own module, imported when it runs."""

from __future__ import annotations

from runstream.read.cli.parsers import add_read_parsers

__all__ = ["add_read_parsers"]
