"""A first look at a statement before it is sent: refuse what is plainly not one read query.

This is a courtesy, not the guarantee. ClickHouse enforces read-only on every query the read
layer sends (``readonly=2`` and the limits, :mod:`runstream.read.reader`), and in a deployment the
reader user's grants keep table functions away from files, URLs and other servers
(deploy/compose/clickhouse/users.xml). The screen exists so a reader gets a message that says what
to write instead, and so the limits a query runs under cannot be lifted by a ``SETTINGS`` clause.

The lexer follows ClickHouse's (docs "SQL syntax"): ``'...'`` strings with backslash escapes and
doubled quotes, ``"..."`` and backtick identifiers, ``$tag$...$tag$`` heredocs, comments
``-- ``, ``#`` and ``/* */`` (nested). Unterminated strings or comments are refused, so nothing is
ever hidden from the screen by a quote the server reads differently.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from runstream.errors import ReadRefusedError

#: First keywords of the statements the read layer runs (ClickHouse's "read data queries").
READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})

# First keywords of ClickHouse's statements that change data, schema, users or the server.
_WRITES = frozenset(
    {
        "INSERT", "UPDATE", "DELETE", "ALTER", "CREATE", "DROP", "TRUNCATE", "RENAME",
        "EXCHANGE", "OPTIMIZE", "ATTACH", "DETACH", "UNDROP", "SYSTEM", "KILL", "GRANT", "REVOKE",
        "SET", "USE", "MOVE", "BACKUP", "RESTORE", "REPLACE",
    }
)  # fmt: skip

# Table functions (and the function `file`) that read outside the database: local files, URLs,
# object stores, other servers and databases, programs, the request body.
_OUTSIDE = frozenset(
    {
        "url", "urlcluster", "remote", "remotesecure", "cluster", "clusterallreplicas", "sqlite",
        "mongodb", "redis", "odbc", "jdbc", "executable", "input", "gcs", "oss", "cosn",
        "arrowflight", "ytsaurus", "prometheusquery", "prometheusqueryrange",
        "catboostevaluate",  # reads a model file from the server's disk
    }
)  # fmt: skip
_OUTSIDE_PREFIXES = (
    "file", "s3", "azureblob", "iceberg", "deltalake", "hudi", "paimon", "hdfs", "mysql",
    "postgres",
)  # fmt: skip

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC = re.compile(r"\$([A-Za-z0-9_]*)\$")


@dataclass(frozen=True)
class Token:
    """A word (keyword or identifier, ``quoted`` when it was written in quotes or backticks),
    a string literal (``kind == "string"``), or one character of punctuation."""

    kind: str  # "word", "string", "punct", "number"
    text: str
    quoted: bool = False
    end: int = field(default=0, compare=False)  # offset just past the token in the SQL


def tokens(sql: str) -> list[Token]:
    """The tokens of ``sql`` without comments; raises :class:`ReadRefusedError` on an
    unterminated string, identifier or comment."""
    out: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("--", i) or ch == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise ReadRefusedError("the SQL has a /* comment that is never closed (*/)")
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch in "'\"`":
            j = i + 1
            while True:
                if j >= n:
                    what = "string" if ch == "'" else "quoted identifier"
                    raise ReadRefusedError(f"the SQL has a {what} that is never closed ({ch})")
                if sql[j] == "\\":
                    j += 2
                elif sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # a doubled quote stands for itself
                        j += 2
                    else:
                        break
                else:
                    j += 1
            body = sql[i + 1 : j]
            i = j + 1
            out.append(Token("string" if ch == "'" else "word", body, quoted=ch != "'", end=i))
        elif ch == "$" and (match := _HEREDOC.match(sql, i)):
            close = sql.find(match.group(0), match.end())
            if close < 0:
                raise ReadRefusedError(f"the SQL has a heredoc {match.group(0)} never closed")
            i = close + len(match.group(0))
            out.append(Token("string", sql[match.end() : close], end=i))
        elif match := _WORD.match(sql, i):
            i = match.end()
            out.append(Token("word", match.group(0), end=i))
        elif ch.isdigit():
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            out.append(Token("number", sql[i:j], end=j))
            i = j
        else:
            i += 1
            out.append(Token("punct", ch, end=i))
    return out


def _reaches_outside(name: str) -> bool:
    lowered = name.lower()
    return lowered in _OUTSIDE or lowered.startswith(_OUTSIDE_PREFIXES)


def screen(sql: str) -> str:
    """``sql`` up to its last token (no trailing ``;`` or comment: the client appends a
    ``FORMAT`` clause) if it is one read statement the read layer may send.

    Raises :class:`ReadRefusedError` (saying what to do) for: an empty statement, more than one
    statement, a statement that is not SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS, a table
    function that reads outside the database (``file``, ``url``, ``s3``, ``remote``, ``mysql``,
    ``postgresql``, ``executable``, ``input``...), a ``SETTINGS`` clause (the read limits are not
    the query's to change), ``INTO OUTFILE``, or a ``FORMAT`` clause at the end (the read
    layer asks for its own format: ``runstream query --format``).
    """
    toks = tokens(sql)
    while toks and toks[-1] == Token("punct", ";"):
        toks.pop()
    if not toks:
        raise ReadRefusedError("the SQL is empty: give one SELECT statement")
    if Token("punct", ";") in toks:
        raise ReadRefusedError(
            "the SQL holds more than one statement (a ';' before the end): send one at a time"
        )
    first = next((t for t in toks if t.kind != "punct" or t.text != "("), toks[0])
    if first.kind != "word" or first.quoted or first.text.upper() not in READ_STATEMENTS:
        word = first.text.upper()
        # A typo (SELEC) is not an attempt to write: only a writing statement hears about it.
        why = "; the read side never changes the database" if word in _WRITES else ""
        raise ReadRefusedError(
            f"{first.text!r} is not a read statement: only read statements run here "
            f"(SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS){why}"
        )
    for here, after in itertools.pairwise(toks):
        if here.kind != "word":
            continue
        word = here.text.upper()
        # Quoted names too: ClickHouse calls `file`(...) and "file"(...) like file(...).
        if after == Token("punct", "(") and _reaches_outside(here.text):
            raise ReadRefusedError(
                f"the table function {here.text}() reads outside the runstream database "
                "(files, URLs, other servers): the read side only reads runstream's tables"
            )
        if here.quoted:
            continue
        if word == "SETTINGS":
            raise ReadRefusedError(
                "a SETTINGS clause cannot be used here: the read limits (time, memory, rows) "
                "are set by runstream; change RUNSTREAM_READ_MAX_EXECUTION_TIME, "
                "RUNSTREAM_READ_MAX_MEMORY_USAGE or RUNSTREAM_READ_MAX_RESULT_ROWS instead"
            )
        if word == "FORMAT" and after.kind == "word" and after is toks[-1]:
            raise ReadRefusedError(
                f"a FORMAT clause ({after.text}) cannot be used here: runstream chooses the "
                "output format. Drop it and use --format table|csv|json (runstream query), "
                "or .to_pandas() / .to_arrow() / .to_records() in Python"
            )
        if word == "INTO" and after.kind == "word" and after.text.upper() == "OUTFILE":
            raise ReadRefusedError(
                "INTO OUTFILE cannot be used here: use `runstream query --format csv > FILE`"
            )
    return sql[: toks[-1].end].strip()


def placeholders(sql: str) -> set[str]:
    """Names of the ``{name:Type}`` query parameters in ``sql`` (outside strings and comments)."""
    names: set[str] = set()
    toks = tokens(sql)
    for i, tok in enumerate(toks[:-2]):
        if (tok, toks[i + 1].kind, toks[i + 2]) == (
            Token("punct", "{"),
            "word",
            Token("punct", ":"),
        ):
            names.add(toks[i + 1].text)
    return names


__all__ = ["READ_STATEMENTS", "Token", "placeholders", "screen", "tokens"]
