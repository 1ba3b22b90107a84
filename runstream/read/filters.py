r"""The ``where`` filter language of ``api.runs(where=...)`` and ``runstream runs ls --where``.

``compile_filter(expression)`` turns an expression such as ::

    config.lr > 1e-3 and summary["val/loss"] < 0.2 and "baseline" in tags and status == "finished"

into ``(sql, parameters)``: a boolean SQL fragment over the columns of the ``runs_current`` view
(docs/sql.md) and the ClickHouse query parameters it uses. Every literal and every config or
summary key of the expression is a parameter (``{f0:String}``, ``{f1:Float64}``, ...), bound by
the server; no text of the expression is ever pasted into the SQL, which depends only on the
expression's shape. Bad expressions raise :class:`runstream.errors.FilterError`, whose message
shows the expression with a caret under the offending token and says what was expected.

Grammar (keywords are case-insensitive, names are not)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field OP literal | literal OP field
                | field ["not"] "in" "[" [literal ("," literal)* [","]] "]"
                | string ["not"] "in" "tags"
                | field ("=~" | "!~") string
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="
    field      := status | project | run_id | name | group | job_type
                | created_at | started_at | finished_at | tags
                | ("config" | "summary") key+
    key        := "." segment | "[" string "]"
    segment    := one or more of A-Z a-z 0-9 _ / -
    literal    := number | string | true | false | null
    string     := '...' | "..."  (escapes \\ \" \' \/ \n \t \r \0 \uXXXX; any other
                  backslash stays, so that regular expressions read as written)

Rules (what a comparison means, docs/read.md "Filters"):

- ``status``, ``project``, ``run_id``, ``name``, ``group``, ``job_type`` are text: compared with
  strings (``<`` and ``>`` compare bytes), ``=~`` is ClickHouse ``match`` (RE2 syntax, unanchored).
- ``created_at`` (the same as ``started_at``, wandb's name), ``started_at``, ``finished_at``
  compare with ISO 8601 strings (``"2026-01-31"``, ``"2026-01-31T12:00:00+02:00"``); a time
  without offset is UTC. ``finished_at`` is null while a run runs (``finished_at == null``).
- ``tags``: ``"x" in tags`` (the run has tag x), ``tags =~ "re"`` (some tag matches).
- ``config.<key>`` and ``summary.<key>`` read the JSON documents of ``runs_current``; a dotted
  path ``config.optimizer.lr`` is the top-level key ``"optimizer.lr"`` if the document has one,
  else the nested key ``lr`` of ``optimizer``; ``config["odd key"]["x"]`` names keys exactly.
  Against a number a value compares numerically and must be a JSON number (the schema's
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` count as numbers, so a summary that is NaN is
  never ``< 0.2``, and stay strings: ``summary.loss == "NaN"``); against a string it must be a
  JSON string; ``true``/``false``/``null`` with ``==`` and ``!=`` only, ``== null`` also holds
  for a missing key.
- A comparison whose value is missing or of another type is false, ``!=`` included; ``not``
  is the plain complement (``not config.lr > 0.1`` holds for a run without ``lr``), and so is
  ``not in``.

Why a hand-written recursive-descent parser rather than a parsing library (lark, pyparsing,
parsimonious): the language is a dozen tokens and five rules, and what matters is what the
libraries do not give for free — an exact caret and an "expected ..." message in our words, a
bound on nesting (hostile input must not reach a RecursionError), and emitting parameterised
SQL as we go. Reading SQL with a SQL parser (sqlglot) would accept far more than we want to
allow. It runs once per query, on no hot path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from runstream.errors import FilterError

__all__ = ["FIELDS", "MAX_DEPTH", "MAX_LENGTH", "compile_filter", "compile_order"]

# Text columns of runs_current a filter may name, and the column each reads.
_TEXT = {
    "status": "status",
    "project": "project",
    "run_id": "run_id",
    "name": "name",
    "group": "group",
    "job_type": "job_type",
}
_TIME = {"created_at": "started_at", "started_at": "started_at", "finished_at": "finished_at"}
_NULLABLE_TIME = {"finished_at"}
_DOCS = ("config", "summary")
FIELDS: tuple[str, ...] = (*_TEXT, *_TIME, "tags", "config.<key>", "summary.<key>")
"""The names a filter may use, as the error messages list them."""
ORDER_ONLY: tuple[str, ...] = ("last_step", "last_event_at")
"""Columns of runs_current (and runs_brief, migration 0013) an order_by may name, a filter not."""

MAX_LENGTH = 20_000
"""Longest expression accepted, in characters."""
MAX_DEPTH = 64
"""Deepest nesting of parentheses and ``not`` accepted (hostile input cannot exhaust the
stack)."""

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SQL_OP = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "0": "\0", "/": "/"}

_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"[A-Za-z0-9_/\-]+")
_OPERATOR = re.compile(r"==|!=|<=|>=|=~|!~|<|>")

_TokenKind = Literal["name", "keyword", "number", "string", "op", "punct", "segment", "end"]


@dataclass(frozen=True)
class _Token:
    kind: _TokenKind
    text: str  # as typed (keywords lower-cased)
    pos: int
    value: Any = None  # the number or the unescaped string


def _tokens(expression: str) -> list[_Token]:
    out: list[_Token] = []
    i, n = 0, len(expression)
    while i < n:
        c = expression[i]
        if c.isspace():
            i += 1
            continue
        if out and out[-1].kind == "punct" and out[-1].text == ".":
            # A key after a dot: its own alphabet, so that summary.val/loss and config.0 read.
            m = _SEGMENT.match(expression, i)
            if not m:
                raise FilterError("expected a key name after '.'", expression, i)
            out.append(_Token("segment", m.group(), i, m.group()))
            i = m.end()
            continue
        if c in "\"'":
            text, end = _string(expression, i)
            out.append(_Token("string", expression[i:end], i, text))
            i = end
            continue
        # '.' after a name or a key starts a key (config.lr, config["a"].b), never a number.
        key_dot = (
            c == "." and bool(out) and (out[-1].kind in ("name", "segment") or out[-1].text == "]")
        )
        m = None if key_dot else _NUMBER.match(expression, i)
        if m and (c != "-" or not out or out[-1].kind in ("op", "punct", "keyword")):
            value = float(m.group())
            if not math.isfinite(value):
                raise FilterError("number out of range of a 64-bit float", expression, i)
            if m.end() < n and (expression[m.end()].isalnum() or expression[m.end()] == "_"):
                raise FilterError("expected a number", expression, i)
            out.append(_Token("number", m.group(), i, value))
            i = m.end()
            continue
        m = _NAME.match(expression, i)
        if m:
            word = m.group()
            if word.lower() in _KEYWORDS:
                out.append(_Token("keyword", word.lower(), i))
            else:
                out.append(_Token("name", word, i))
            i = m.end()
            continue
        m = _OPERATOR.match(expression, i)
        if m:
            out.append(_Token("op", m.group(), i))
            i = m.end()
            continue
        if c in "()[],.":
            out.append(_Token("punct", c, i))
            i += 1
            continue
        if c == "=":
            raise FilterError("'=' is not an operator: compare with '=='", expression, i)
        if c in "&|":
            word = "and" if c == "&" else "or"
            raise FilterError(f"'{c}' is not an operator: write '{word}'", expression, i)
        if c == "!":
            raise FilterError("'!' is not an operator: write 'not', '!=' or '!~'", expression, i)
        raise FilterError(f"unexpected character {c!r}", expression, i)
    out.append(_Token("end", "", n))
    return out


def _string(expression: str, start: int) -> tuple[str, int]:
    """The string literal at ``start`` (quoted with ' or "), unescaped, and where it ends."""
    quote = expression[start]
    chars: list[str] = []
    i = start + 1
    while i < len(expression):
        c = expression[i]
        if c == quote:
            return "".join(chars), i + 1
        if c == "\\":
            nxt = expression[i + 1 : i + 2]
            if nxt in _ESCAPES and nxt:
                chars.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u":
                digits = expression[i + 2 : i + 6]
                if len(digits) == 4 and all(d in "0123456789abcdefABCDEF" for d in digits):
                    chars.append(chr(int(digits, 16)))
                    i += 6
                    continue
                raise FilterError("expected four hex digits after '\\u'", expression, i)
            # Any other backslash is kept with its character, so that a regular expression
            # reads as written: "^run-\d+$" is the pattern ^run-\d+$.
            chars.append(c)
            i += 1
            continue
        chars.append(c)
        i += 1
    raise FilterError(f"string not closed: expected {quote} before the end", expression, start)


# The parse tree: fields and conditions.


@dataclass(frozen=True)
class _Field:
    kind: Literal["text", "time", "tags", "json"]
    column: str
    token: _Token
    keys: tuple[str, ...] = ()
    dotted: bool = False  # config.a.b (may also be the top-level key "a.b")

    @property
    def label(self) -> str:
        return self.token.text if self.kind != "json" else f"{self.column}.{'.'.join(self.keys)}"


@dataclass
class _Sql:
    """The SQL being written and its parameters."""

    prefix: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, type_name: str) -> str:
        name = f"{self.prefix}{len(self.parameters)}"
        self.parameters[name] = value
        return f"{{{name}:{type_name}}}"


class _Parser:
    def __init__(self, expression: str, prefix: str) -> None:
        self.expression = expression
        self.tokens = _tokens(expression)
        self.i = 0
        self.depth = 0
        self.sql = _Sql(prefix)

    # Tokens.

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.token
        return t.kind == kind and (text is None or t.text == text)

    def fail(self, reason: str, token: _Token | None = None) -> FilterError:
        return FilterError(reason, self.expression, (token or self.token).pos)

    def expected(self, what: str, after: _Token | None = None) -> FilterError:
        """'expected <what> after '<previous token>'' at the current token."""
        previous = after or self.tokens[max(self.i - 1, 0)]
        tail = f" after '{previous.text}'" if self.i > 0 and previous.text else ""
        found = "" if self.at("end") else f", found '{self.token.text}'"
        return self.fail(f"expected {what}{tail}{found}")

    # Grammar.

    def parse(self) -> str:
        if self.at("end"):
            raise self.fail('empty filter: expected a condition such as status == "finished"')
        sql = self.or_expr()
        if not self.at("end"):
            raise self.expected("'and', 'or' or the end of the filter")
        return sql

    def or_expr(self) -> str:
        parts = [self.and_expr()]
        while self.at("keyword", "or"):
            self.advance()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_expr(self) -> str:
        parts = [self.not_expr()]
        while self.at("keyword", "and"):
            self.advance()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_expr(self) -> str:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"filter nested deeper than {MAX_DEPTH} levels")
        try:
            if self.at("keyword", "not"):
                self.advance()
                return f"(NOT {self.not_expr()})"
            if self.at("punct", "("):
                self.advance()
                inner = self.or_expr()
                if not self.at("punct", ")"):
                    raise self.expected("')' or 'and' or 'or'")
                self.advance()
                return inner
            return self.comparison()
        finally:
            self.depth -= 1

    def comparison(self) -> str:
        if self.at("name"):
            subject = self.field()
            return self.after_field(subject)
        if self.at("number") or self.at("string") or self.at("keyword"):
            if self.at("keyword") and self.token.text not in ("true", "false", "null"):
                raise self.expected("a condition")
            literal = self.advance()
            return self.after_literal(literal)
        raise self.expected("a condition (a name such as status or config.lr, 'not' or '(')")

    def field(self) -> _Field:
        token = self.advance()
        name = token.text
        if name in _TEXT:
            return _Field("text", _TEXT[name], token)
        if name in _TIME:
            return _Field("time", _TIME[name], token)
        if name == "tags":
            return _Field("tags", "tags", token)
        if name in _DOCS:
            keys: list[str] = []
            dotted = False
            while True:
                if self.at("punct", "."):
                    self.advance()
                    if not self.at("segment"):  # the end came right after the dot
                        raise self.expected("a key name")
                    keys.append(self.advance().text)  # the tokenizer made it a segment
                    dotted = True
                elif self.at("punct", "["):
                    self.advance()
                    if not self.at("string"):
                        raise self.expected(f'a quoted key, as in {name}["val/loss"]')
                    keys.append(self.advance().value)
                    if not self.at("punct", "]"):
                        raise self.expected("']'")
                    self.advance()
                else:
                    break
            if not keys:
                raise self.expected(f'a key, as in {name}.lr or {name}["val/loss"]')
            return _Field("json", name, token, tuple(keys), dotted and len(keys) > 1)
        known = ", ".join(FIELDS)
        raise self.fail(f"unknown name '{name}': expected one of {known}", token)

    def after_field(self, subject: _Field) -> str:
        op = self.token
        if op.kind == "op" and op.text in _COMPARE:
            self.advance()
            literal = self.literal(op)
            return self.compare(subject, op.text, literal)
        if op.kind == "op" and op.text in ("=~", "!~"):
            self.advance()
            if not self.at("string"):
                raise self.expected("a quoted regular expression")
            pattern = self.advance()
            return self.regex(subject, pattern, negate=op.text == "!~")
        negate = False
        if self.at("keyword", "not"):
            self.advance()
            negate = True
            if not self.at("keyword", "in"):
                raise self.expected("'in'")
        if self.at("keyword", "in"):
            in_token = self.advance()
            if subject.kind == "tags":
                raise self.fail('tags holds a list: write "x" in tags', subject.token)
            items = self.literal_list(in_token)
            if not items:
                return "1" if negate else "0"
            raw = self.raw(subject) if subject.kind == "json" else ""  # its keys bound once
            parts = [self.compare(subject, "==", item, raw) for item in items]
            sql = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
            return f"(NOT {sql})" if negate else sql
        found = "" if self.at("end") else f", found '{self.token.text}'"
        raise self.fail(
            f"expected an operator (==, !=, <, <=, >, >=, =~, !~, in) after '{subject.label}'"
            + found
        )

    def after_literal(self, literal: _Token) -> str:
        negate = False
        if self.at("keyword", "not"):
            self.advance()
            negate = True
            if not self.at("keyword", "in"):
                raise self.expected("'in'")
        if self.at("keyword", "in"):
            self.advance()
            if not (self.at("name") and self.token.text == "tags"):
                raise self.expected('tags ("x" in tags)')
            self.advance()
            if literal.kind != "string":
                raise self.fail('tags are strings: write "x" in tags', literal)
            sql = f"has(tags, {self.sql.bind(literal.value, 'String')})"
            return f"(NOT {sql})" if negate else sql
        if self.at("op") and self.token.text in _COMPARE:
            op = self.advance()
            if not self.at("name"):
                raise self.expected("a name such as config.lr")
            subject = self.field()
            return self.compare(subject, _FLIPPED[op.text], literal)
        raise self.expected("'in tags' or an operator and a name")

    def literal(self, after: _Token) -> _Token:
        t = self.token
        if t.kind in ("number", "string") or (
            t.kind == "keyword" and t.text in ("true", "false", "null")
        ):
            return self.advance()
        raise self.expected("a value (a number, a quoted string, true, false or null)", after)

    def literal_list(self, after: _Token) -> list[_Token]:
        if not self.at("punct", "["):
            raise self.expected('a list of values, as in ["a", "b"]', after)
        self.advance()
        items: list[_Token] = []
        while not self.at("punct", "]"):
            items.append(self.literal(self.tokens[self.i - 1]))
            if self.at("punct", ","):
                self.advance()
            elif not self.at("punct", "]"):
                raise self.expected("',' or ']'")
        self.advance()
        return items

    # SQL of one comparison.

    def compare(self, subject: _Field, op: str, literal: _Token, raw: str = "") -> str:
        """SQL of ``subject op literal``; ``raw``: the SQL of a config or summary value's JSON
        text when the caller has it already."""
        kind = literal.kind if literal.kind != "keyword" else literal.text
        bind = self.sql.bind
        if subject.kind == "text":
            if kind != "string":
                raise self.fail(
                    f"{subject.label} holds text: compare it with a quoted string, as in "
                    f'{subject.label} == "x"',
                    literal,
                )
            return f"(`{subject.column}` {_SQL_OP[op]} {bind(literal.value, 'String')})"
        if subject.kind == "time":
            column = f"`{subject.column}`"
            if kind == "null":
                if subject.column not in _NULLABLE_TIME:
                    raise self.fail(f"{subject.label} is never null", literal)
                if op not in ("==", "!="):
                    raise self.fail("null compares with == and != only", literal)
                return f"({column} IS {'NOT ' if op == '!=' else ''}NULL)"
            if kind != "string":
                raise self.fail(
                    f"{subject.label} is a time: compare it with an ISO 8601 string, as in "
                    f'{subject.label} > "2026-01-31T12:00:00Z"',
                    literal,
                )
            when = self.time(literal)
            value = f"toDateTime64({bind(when, 'String')}, 6, 'UTC')"
            return f"ifNull({column} {_SQL_OP[op]} {value}, 0)"
        if subject.kind == "tags":
            raise self.fail('tags holds a list: write "x" in tags or tags =~ "re"', subject.token)
        raw = raw or self.raw(subject)
        if kind == "number":
            number = self.number(raw)
            return f"ifNull({number} {_SQL_OP[op]} {bind(literal.value, 'Float64')}, 0)"
        if kind == "string":
            text = self.text(raw)
            return f"ifNull({text} {_SQL_OP[op]} {bind(literal.value, 'String')}, 0)"
        if op not in ("==", "!="):
            raise self.fail(f"{kind} compares with == and != only", literal)
        value = bind(kind, "String")  # the JSON text of true, false or null
        if kind == "null":
            if op == "==":
                return f"({raw} = '' OR {raw} = {value})"
            return f"({raw} != '' AND {raw} != {value})"
        if op == "==":
            return f"({raw} = {value})"
        return f"({raw} != '' AND {raw} != {value})"

    def regex(self, subject: _Field, pattern: _Token, negate: bool) -> str:
        # ClickHouse's match() is RE2. Python's re reads a superset of RE2's syntax, so what it
        # refuses RE2 refuses too and the user gets a caret rather than a server error; what
        # only RE2 refuses (lookarounds, backreferences) comes back as ClickHouse's message.
        try:
            re.compile(pattern.value)
        except (re.error, OverflowError, RecursionError) as error:
            raise self.fail(f"not a regular expression: {error}", pattern) from None
        p = self.sql.bind(pattern.value, "String")
        if subject.kind == "tags":
            sql = f"arrayExists(t -> match(t, {p}), tags)"
            return f"(NOT {sql})" if negate else sql
        if subject.kind == "time":
            raise self.fail(f"{subject.label} is a time: compare it with <, >, ...", pattern)
        if subject.kind == "text":
            sql = f"match(`{subject.column}`, {p})"
            return f"(NOT {sql})" if negate else sql
        text = self.text(self.raw(subject))
        return f"ifNull({'NOT ' if negate else ''}match({text}, {p}), 0)"

    def raw(self, subject: _Field) -> str:
        """SQL of the JSON text of a config or summary value ('' when missing)."""
        doc = subject.column
        keys = ", ".join(self.sql.bind(k, "String") for k in subject.keys)
        nested = f"JSONExtractRaw({doc}, {keys})"
        if not subject.dotted:
            return nested
        joined = self.sql.bind(".".join(subject.keys), "String")
        return f"if(JSONHas({doc}, {joined}), JSONExtractRaw({doc}, {joined}), {nested})"

    @staticmethod
    def number(raw: str) -> str:
        """SQL of a JSON value as a Float64 (NULL when the value is not a number)."""
        # The event schema spells NaN and the infinities as JSON strings; unquoted, they
        # are what toFloat64OrNull reads. Any other string (quoted) reads as NULL.
        return f"toFloat64OrNull(replaceRegexpOne({raw}, '^\"(NaN|-?Infinity)\"$', '\\\\1'))"

    @staticmethod
    def text(raw: str) -> str:
        """SQL of a JSON string value (NULL when the value is not a string)."""
        return f"if(startsWith({raw}, '\"'), JSONExtractString({raw}), NULL)"

    def time(self, literal: _Token) -> str:
        text = str(literal.value)
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read Z
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            when = when.astimezone(timezone.utc)
        except ValueError:
            raise self.fail(
                'expected an ISO 8601 time, as in "2026-01-31" or "2026-01-31T12:00:00Z"',
                literal,
            ) from None
        except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
            raise self.fail("time out of range", literal) from None
        # Not strftime: its %Y does not pad years below 1000 on every platform.
        return (
            f"{when.year:04d}-{when.month:02d}-{when.day:02d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}.{when.microsecond:06d}"
        )


def compile_filter(expression: str, prefix: str = "f") -> tuple[str, dict[str, Any]]:
    """``(sql, parameters)`` for a filter expression over ``runs_current``.

    ``sql`` is a boolean expression to put after ``WHERE`` (or ``AND``) in a query whose
    ``FROM`` is ``runs_current`` (unaliased columns); ``parameters`` maps ``{prefix}0``,
    ``{prefix}1``, ... to the literals and keys, for clickhouse-connect's ``parameters=``
    (server-side ``{name:Type}`` binding). Choose ``prefix`` so that the names do not collide
    with the query's other parameters. Raises :class:`FilterError` for any expression it cannot
    read, longer than :data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(expression, str):
        raise TypeError(f"a filter is a str, not {type(expression).__name__}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"parameter prefix {prefix!r} must be an identifier")
    if len(expression) > MAX_LENGTH:
        raise FilterError(
            f"filter longer than {MAX_LENGTH} characters: narrow it down", expression, MAX_LENGTH
        )
    parser = _Parser(expression, prefix)
    sql = parser.parse()
    return sql, parser.sql.parameters


def compile_order(name: str, prefix: str = "o") -> tuple[list[str], dict[str, Any]]:
    """``(expressions, parameters)``: ascending SQL sort expressions over ``runs_current`` for
    one field name of the filter language (``status``, ``started_at``, ``config.lr``,
    ``summary["val/loss"]``...), without the ``-`` of a descending order.

    Text and time fields sort by their column. A config or summary value sorts first by its
    number (JSON numbers and the schema's ``"NaN"``/``"Infinity"`` strings; NULL for anything
    else), then by its text when it is a JSON string: write ``NULLS LAST`` after each so that
    runs without the key come last. The keys are parameters named ``{prefix}0``, ... as in
    :func:`compile_filter`. ``tags`` has no order. :data:`ORDER_ONLY` names (``last_step``,
    ``last_event_at``) sort but do not filter. Raises :class:`FilterError` with a caret."""
    if not isinstance(name, str):
        raise TypeError(f"an order_by name is a str, not {type(name).__name__}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"parameter prefix {prefix!r} must be an identifier")
    if len(name) > MAX_LENGTH:
        raise FilterError(f"name longer than {MAX_LENGTH} characters", name, MAX_LENGTH)
    if name.strip() in ORDER_ONLY:
        return [f"`{name.strip()}`"], {}
    parser = _Parser(name, prefix)
    if not parser.at("name"):
        raise parser.expected("a name such as summary.loss, config.lr or started_at")
    subject = parser.field()
    if not parser.at("end"):
        raise parser.expected("the end of the name (one name per entry; '-name' sorts descending)")
    if subject.kind in ("text", "time"):
        return [f"`{subject.column}`"], parser.sql.parameters
    if subject.kind == "tags":
        raise parser.fail("tags is a list and has no order: sort by another name", subject.token)
    raw = parser.raw(subject)
    return [parser.number(raw), parser.text(raw)], parser.sql.parameters
