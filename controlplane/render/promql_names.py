"""The vector selectors of a PromQL expression: which metrics it reads, with which matchers, inside which call.

A small tokenizer, not a PromQL parser: enough to name the metrics a dashboard or rule file queries and to check
lint habits (counters inside ``rate``/``increase``, ranges of ``$__rate_interval``). Whether an expression is valid
PromQL is promtool's job. Grafana variables (``$__rate_interval``, ``${datasource}``) are read as opaque operands.

    sum by (le) (rate(x_bucket{env=~"$environment"}[$__rate_interval]))
    -> VectorSelector(metric="x_bucket", matchers=(env=~"$environment",), call="rate", range="$__rate_interval")

An identifier is a metric name unless it is a keyword (``by``, ``and``, ``offset``...), an aggregation operator,
a number (``Inf``, ``NaN``) or followed by ``(`` (a function); label names inside ``{...}`` and in grouping lists
(``by (...)``, ``on (...)``, ``group_left (...)``) are never metric names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AGGREGATIONS", "Matcher", "PromQLSyntaxError", "VectorSelector", "metric_names", "vector_selectors"]

#: Aggregation operators: called like functions, optionally with a `by`/`without` clause before the parenthesis.
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
    | {"limitk", "limit_ratio"}
)
#: Keywords followed by a parenthesised list of label names.
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _GROUPING | {"and", "or", "unless", "atan2", "bool", "offset"}
_NUMBERS = frozenset({"inf", "nan"})

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+"  # hexadecimal
    r"|(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_])"  # duration: 5m, 1h30m
    r"|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"  # decimal
)
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")  # Grafana: $name, ${name}, ${name:format}
_MATCH_OPERATOR = re.compile(r"=~|!~|!=|=")


class PromQLSyntaxError(ValueError):
    """An expression the tokenizer cannot read (unbalanced brackets, an unterminated string...)."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``environment=~"$environment"``."""

    label: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class VectorSelector:
    """One vector selector: its metric name, matchers, the innermost call around it and its range, if any."""

    metric: str  # from __name__="..." when written as {__name__="..."}; "" when not known
    matchers: tuple[Matcher, ...] = ()
    call: str | None = None  # innermost enclosing function or aggregation; None at the top or in bare parentheses
    range: str | None = None  # the text of `[...]` right after the selector (a range vector)

    def matcher(self, label: str) -> Matcher | None:
        """The first matcher on ``label``, or None."""
        return next((m for m in self.matchers if m.label == label), None)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip_space(self) -> None:
        while self.at < len(self.text):
            char = self.text[self.at]
            if char.isspace():
                self.at += 1
            elif char == "#":  # a comment runs to the end of the line
                end = self.text.find("\n", self.at)
                self.at = len(self.text) if end < 0 else end
            else:
                return

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.at] if self.at < len(self.text) else ""

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.at)
        if found is None:
            return None
        self.at = found.end()
        return found.group()

    def string(self) -> str:
        quote = self.text[self.at]
        self.at += 1
        value: list[str] = []
        while self.at < len(self.text):
            char = self.text[self.at]
            self.at += 1
            if char == quote:
                return "".join(value)
            if char == "\\" and quote != "`" and self.at < len(self.text):
                value.append(self.text[self.at])
                self.at += 1
            else:
                value.append(char)
        raise PromQLSyntaxError(f"unterminated string in {self.text!r}")

    def until(self, closing: str) -> str:
        """The raw text up to ``closing`` (consumed), for ranges and label lists."""
        end = self.text.find(closing, self.at)
        if end < 0:
            raise PromQLSyntaxError(f"missing {closing!r} in {self.text!r}")
        raw = self.text[self.at : end]
        self.at = end + 1
        return raw.strip()

    def matchers(self) -> tuple[Matcher, ...]:
        """Read ``{label op "value", ...}``; the opening brace is already consumed."""
        found: list[Matcher] = []
        while True:
            char = self.peek()
            if char == "}":
                self.at += 1
                return tuple(found)
            if char == ",":
                self.at += 1
                continue
            # Quoted label names are Prometheus 3 syntax.
            label = self.string() if char in "\"'`" else self.match(_LABEL) or ""
            self.skip_space()
            op = self.match(_MATCH_OPERATOR)
            if not label or op is None or self.peek() not in ('"', "'", "`"):
                raise PromQLSyntaxError(f"bad label matcher at {self.text[self.at :]!r} in {self.text!r}")
            found.append(Matcher(label, op, self.string()))


def vector_selectors(expr: str) -> list[VectorSelector]:
    """Every vector selector of ``expr``, in order of appearance."""
    reader = _Reader(expr)
    calls: list[str | None] = []  # one entry per open parenthesis: the call it opened, or None
    pending: str | None = None  # a function or aggregation waiting for its `(`
    found: list[VectorSelector] = []

    def selector(metric: str) -> None:
        matchers: tuple[Matcher, ...] = ()
        if reader.peek() == "{":
            reader.at += 1
            matchers = reader.matchers()
        if not metric:
            named = next((m for m in matchers if m.label == "__name__" and m.op == "="), None)
            metric = named.value if named else ""
        span = None
        if reader.peek() == "[":
            reader.at += 1
            span = reader.until("]")
        found.append(VectorSelector(metric, matchers, calls[-1] if calls else None, span))

    while (char := reader.peek()) != "":
        if char in "\"'`":
            reader.string()
        elif char == "$":
            if reader.match(_VARIABLE) is None:
                raise PromQLSyntaxError(f"stray `$` in {expr!r}")
        elif char == "{":
            selector("")
        elif char == "[":  # a subquery range after a parenthesised expression
            reader.at += 1
            reader.until("]")
        elif char == "(":
            reader.at += 1
            calls.append(pending)
            pending = None
        elif char == ")":
            reader.at += 1
            if not calls:
                raise PromQLSyntaxError(f"unbalanced `)` in {expr!r}")
            calls.pop()
        elif reader.match(_NUMBER) is not None:
            pass
        elif (name := reader.match(_IDENTIFIER)) is not None:
            lowered = name.lower()
            if lowered in _GROUPING:
                if reader.peek() == "(":
                    reader.at += 1
                    reader.until(")")
            elif lowered in _KEYWORDS or lowered in _NUMBERS:
                pass
            elif lowered in AGGREGATIONS or reader.peek() == "(":
                pending = name
            else:
                selector(name)
        else:  # operators and commas
            reader.at += 1
    if calls:
        raise PromQLSyntaxError(f"unbalanced `(` in {expr!r}")
    return found


def metric_names(expr: str) -> list[str]:
    """The metric names ``expr`` reads, once each, in order of appearance."""
    return list(dict.fromkeys(s.metric for s in vector_selectors(expr) if s.metric))
