"""A definition file as YAML with line numbers: reading it (on/off stay strings, no repeated keys) and putting each
refusal, including msgspec's type errors, on the line of the field it is about as a ``DefinitionError``."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import yaml

__all__ = [
    "DefinitionError",
    "Document",
    "FieldPath",
    "Refuse",
    "Segment",
    "read_document",
    "render_path",
]

#: One step of a field path: a mapping key or a sequence index.
Segment = str | int
FieldPath = tuple[Segment, ...]
#: Builds the error refusing what is at a field path (``Document.error``): the checks raise what it returns.
Refuse = Callable[[FieldPath, str], Exception]

_T = TypeVar("_T")


class DefinitionError(ValueError):
    """A definition that cannot be loaded: the file, the 1-based line, the field path and why."""

    def __init__(self, *, source: str, line: int, path: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason
        where = f"{source}:{line}: {path}" if path else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")


_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DefinitionYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads only true/false as booleans."""


# Why: YAML 1.1 (pyyaml's default) reads bare on/off/yes/no as booleans, so `off_variant: off` or a variant
# named `on` would silently become False. Those are the natural variant names of a boolean flag, so this
# loader follows YAML 1.2 instead: only true/false are booleans, everything else in that family is a string.
_DefinitionYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DefinitionYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def render_path(path: FieldPath) -> str:
    """Write a field path the way errors show it: ``flags[0].plan.environments[2].stages[1].percentage``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            text += f".{segment}" if text else segment
        else:
            text += f"[{json.dumps(segment)}]"
    return text


@dataclass(frozen=True, slots=True)
class Document:
    """The file being loaded: its name, and its node tree to find the line of a field path."""

    source: str
    root: yaml.Node

    def error(self, path: FieldPath, reason: str) -> DefinitionError:
        """Build the error for ``path``, on the line of the deepest part of it present in the file."""
        return DefinitionError(
            source=self.source, line=_line_of(self.root, path), path=render_path(path), reason=reason
        )

    def convert(self, data: Any, into: type[_T]) -> _T:
        """Convert the document's plain ``data`` into ``into``; a type msgspec refuses is an error on its line."""
        try:
            return msgspec.convert(data, into)
        except msgspec.ValidationError as exc:
            raise _explain_validation_error(str(exc), data, self, into) from exc


def read_document(text: str, source: str) -> tuple[Document, Any]:
    """Parse YAML text into the document (its node tree kept for line numbers) and its plain data."""
    try:
        # Constructing the loader already reads the text, refusing non-printable characters.
        loader = _DefinitionYamlLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise DefinitionError(source=source, line=line, path="", reason=f"invalid YAML: {exc.reason}") from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise DefinitionError(
                source=source, line=1, path="", reason="the file is empty: expected `pipeline` and `flags`"
            )
        document = Document(source, root)
        # Before construction: merge keys (`<<`) rewrite mappings in place while being constructed.
        _refuse_duplicate_keys(document, root, (), set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        line = mark.line + 1 if mark is not None else 1
        raise DefinitionError(source=source, line=line, path="", reason=f"invalid YAML: {reason}") from exc
    finally:
        loader.dispose()
    return document, data


def _refuse_duplicate_keys(document: Document, node: yaml.Node, path: FieldPath, seen: set[int]) -> None:
    """Refuse a mapping that repeats a key, which YAML loaders otherwise resolve by keeping the last."""
    if id(node) in seen:  # an alias: its anchor was already checked (and may even contain itself)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            here = (*path, key.value)
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first_lines:
                raise DefinitionError(
                    source=document.source,
                    line=line,
                    path=render_path(here),
                    reason=f"`{key.value}` is given twice in the same mapping "
                    f"(first on line {first_lines[(key.tag, key.value)]})",
                )
            first_lines[(key.tag, key.value)] = line
            _refuse_duplicate_keys(document, value, here, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(document, item, (*path, index), seen)


def _child(node: yaml.Node, segment: Segment) -> tuple[yaml.Node, yaml.Node] | None:
    """Find one step of a path below ``node``: the node that marks its line, and the node to go on from."""
    if isinstance(node, yaml.MappingNode) and isinstance(segment, str):
        # The last occurrence wins, as in construction (merged keys come first, the mapping's own after).
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == segment:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
        item: yaml.Node = node.value[segment]
        return item, item
    return None


def _line_of(root: yaml.Node, path: FieldPath) -> int:
    """Find the 1-based line of a field path: of its key, or of the deepest part of it in the file."""
    node, line = root, root.start_mark.line + 1
    for segment in path:
        found = _child(node, segment)
        if found is None:  # e.g. a missing field: point at the mapping that lacks it
            break
        marker, node = found
        line = marker.start_mark.line + 1
    return line


def _node_at(root: yaml.Node, path: FieldPath) -> yaml.Node | None:
    """Find the node a whole field path leads to, if the file has it."""
    node = root
    for segment in path:
        found = _child(node, segment)
        if found is None:
            return None
        node = found[1]
    return node


# msgspec ends a message with "- at `$.flags[0].type`", or "- at `key` in `$.flags[0].variants`" for a key.
_MSGSPEC_ERROR = re.compile(r"(?P<reason>.*?)(?: - at (?P<on_key>`key` in )?`(?P<path>\$[^`]*)`)?", re.DOTALL)
_MSGSPEC_STEP = re.compile(r"\.(?P<field>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]|(?P<any_key>\[\.\.\.\])")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _explain_validation_error(message: str, data: Any, document: Document, into: type[Any]) -> DefinitionError:
    """Turn a msgspec validation message into a DefinitionError on the right field and line."""
    match = _MSGSPEC_ERROR.fullmatch(message)
    assert match is not None  # every part of the pattern is optional
    reason = match["reason"]
    path = _msgspec_path(match["path"] or "$", data, message, into)
    if missing := _MISSING_FIELD.fullmatch(reason):
        return document.error((*path, missing["field"]), f"required field `{missing['field']}` is missing")
    if unknown := _UNKNOWN_FIELD.fullmatch(reason):
        return document.error((*path, unknown["field"]), f"unknown field `{unknown['field']}`")
    if reason.startswith("Expected `str`") and reason.endswith("got `bool`"):
        reason += "; YAML reads bare true/false as booleans: quote it"
    if match["on_key"]:
        path = _with_bad_key(document.root, path)
        reason = f"this key must be a string: {reason}"
    return document.error(path, reason)


def _msgspec_path(text: str, data: Any, message: str, into: type[Any]) -> FieldPath:
    """Parse msgspec's ``$.a[0].b`` path, naming the dict key wherever msgspec wrote ``[...]``."""
    path: FieldPath = ()
    for step in _MSGSPEC_STEP.finditer(text):
        if step["field"] is not None:
            path = (*path, step["field"])
        elif step["index"] is not None:
            path = (*path, int(step["index"]))
        else:
            key = _failing_key(data, path, message, into)
            if key is None:
                break
            path = (*path, key)
    return path


def _failing_key(data: Any, path: FieldPath, message: str, into: type[Any]) -> str | None:
    """Find which key of the mapping at ``path`` fails, by converting ever longer prefixes of that mapping."""
    mapping = _data_at(data, path)
    if not isinstance(mapping, dict):
        return None
    keys = list(mapping)
    for count, key in enumerate(keys, start=1):
        probe = copy.deepcopy(data)
        trimmed = _data_at(probe, path)
        for later in keys[count:]:
            del trimmed[later]
        try:
            msgspec.convert(probe, into)
        except msgspec.ValidationError as exc:
            # msgspec stops at the first bad value, in order: the first prefix failing the same way holds it.
            if str(exc) == message:
                return str(key)
    return None


def _data_at(data: Any, path: FieldPath) -> Any:
    """Follow a field path through plain data; None where it leads nowhere."""
    for segment in path:
        if isinstance(data, list):
            if not (isinstance(segment, int) and 0 <= segment < len(data)):
                return None
            data = data[segment]
        elif isinstance(data, dict) and segment in data:
            data = data[segment]
        else:
            return None
    return data


def _with_bad_key(root: yaml.Node, path: FieldPath) -> FieldPath:
    """Extend ``path`` with the first key of its mapping that is not a string, when there is one."""
    node = _node_at(root, path)
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag not in (_STR_TAG, _MERGE_TAG):
                return (*path, key.value)
    return path
