"""The text of a config file, turned into plain data with the line of every key.

Only what a JSON document can hold comes out (mappings with string keys, lists, strings, numbers,
booleans and null), so the data can be validated in pydantic's strict JSON mode: a quoted number stays
text and is refused where a number is expected. Everything YAML would do silently and a person would
not expect is a problem reported with its line instead: bytes that are not UTF-8, a key given twice
(YAML keeps the last one), a date where text was meant (kept as the text written), a `{placeholder}`
outside quotes (YAML reads it as a mapping, or fails to parse).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from fridaymorning.errors import ConfigError

__all__ = ["Document", "Problem", "decode", "dotted", "load_document", "placeholder_hint", "raise_problems"]

Location = tuple[str | int, ...]

# Tags whose values JSON can hold; SafeLoader constructs them as str, int, float, bool and None.
JSON_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")}
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MERGE_TAG = "tag:yaml.org,2002:merge"

# The whole unquoted word of a flow list that holds a str.format placeholder such as {port}.
WORD_WITH_PLACEHOLDER = re.compile(r"[^\s,\[\]]*\{[A-Za-z_]\w*\}[^\s,\[\]]*")


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a config file: its line, the dotted field (may be empty) and what is wrong."""

    line: int
    field: str
    message: str

    def render(self, filename: str) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{filename}:{self.line}: {where}{self.message}"


@dataclass
class Document:
    """A parsed config file: the data, the 1-based line of each key path, and the problems found."""

    data: Any
    lines: dict[Location, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Where a value could not be read as plain data: its problem is reported; the value's validation
    # errors there would only repeat it.
    unreadable: set[Location] = field(default_factory=set)

    def explains(self, location: Location) -> bool:
        """Whether a problem already reported covers `location` (it is at or under an unreadable value)."""
        return any(location[: len(place)] == place for place in self.unreadable)


def raise_problems(problems: list[Problem], filename: str) -> None:
    """Raise one ConfigError carrying every problem, one per line in file order; do nothing if none."""
    if not problems:
        return
    first, *rest = sorted(problems)
    where = f"{first.field}: " if first.field else ""
    message = "\n".join([where + first.message, *(problem.render(filename) for problem in rest)])
    raise ConfigError(message, path=filename, line=first.line)


def decode(raw: bytes, filename: str) -> str:
    """The file's text; bytes that are not UTF-8 are a ConfigError with the line they are on."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        byte = raw[error.start]
        raise ConfigError(
            f"byte 0x{byte:02x} in column {column} is not UTF-8; save the file as UTF-8",
            path=filename,
            line=line,
        ) from error


def load_document(text: str, filename: str) -> Document:
    """Parse YAML text into a Document. Broken syntax raises ConfigError at once; everything else that is
    wrong (duplicate keys, unsupported tags) is collected in `problems`, so it is reported with the rest."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        raise syntax_error(error, text, filename) from error
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        message = f"character U+{code:04X} is not allowed in YAML"
        raise ConfigError(message, path=filename, line=line) from error
    document = Document(data=None)
    if node is not None:
        document.data = Converter(document).value(node, ())
    return document


def syntax_error(error: yaml.MarkedYAMLError, text: str, filename: str) -> ConfigError:
    """A ConfigError for broken YAML, with a hint when an unquoted {placeholder} is the likely cause."""
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark else None
    message = f"YAML syntax error: {error.problem}"
    if mark is not None:
        source_lines = text.splitlines()
        word = unquoted_placeholder(source_lines[mark.line]) if mark.line < len(source_lines) else None
        if word is not None:
            message += f"; a {{placeholder}} must be quoted in YAML, quote it: {quoted(word)}"
    return ConfigError(message, path=filename, line=line)


def unquoted_placeholder(source_line: str) -> str | None:
    """The first word of a YAML line that holds a {placeholder} outside quotes, if any."""
    quote: str | None = None
    outside = []
    for character in source_line.split(" #", 1)[0]:
        if quote is None and character in "'\"":
            quote = character
        elif character == quote:
            quote = None
        outside.append(character if quote is None and character not in "'\"" else " ")
    match = WORD_WITH_PLACEHOLDER.search("".join(outside))
    return match.group(0) if match else None


def placeholder_hint(value: Any) -> str | None:
    """For a value YAML made of an unquoted `{port}` (the mapping {'port': None}): how to write it."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if inner is None and isinstance(key, str):
            return f"YAML reads an unquoted {{{key}}} as a mapping; quote it: {quoted('{' + key + '}')}"
    return None


def quoted(word: str) -> str:
    return f'"{word}"'


def dotted(location: Location) -> str:
    """('services', 0, 'rollout') → 'services[0].rollout'."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class Converter:
    """Turns composed YAML nodes into JSON-like data, recording lines and problems in a Document."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.constructor = yaml.SafeLoader("")
        self.active: set[int] = set()  # nodes being converted: an alias back to one is a cycle

    def value(self, node: yaml.Node, location: Location) -> Any:
        self.document.lines.setdefault(location, node.start_mark.line + 1)
        if id(node) in self.active:
            self.problem(node, location, "an alias refers to a node that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self.check_tag(node, location, MAP_TAG)
                return self.mapping(node, location)
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, location, SEQ_TAG)
                return [self.value(item, (*location, index)) for index, item in enumerate(node.value)]
            return self.scalar(node, location)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.Node, location: Location) -> Any:
        if node.tag in JSON_SCALAR_TAGS:
            return self.constructor.construct_object(node)
        if node.tag != TIMESTAMP_TAG:  # '2026-01-02' is a version or a name here, never a date
            self.unsupported_tag(node, location)
        return node.value

    def check_tag(self, node: yaml.Node, location: Location, plain: str) -> None:
        """A mapping or list with a tag (!!set, !!omap, !custom) would mean something else: say so."""
        if node.tag != plain:
            self.unsupported_tag(node, location)

    def unsupported_tag(self, node: yaml.Node, location: Location) -> None:
        self.problem(node, location, f"the YAML tag {node.tag} is not supported here")
        self.document.unreadable.add(location)

    def mapping(self, node: yaml.MappingNode, location: Location) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                self.merge(value_node, location, result)
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, location, "a key must be a plain name, not a list or a mapping")
                continue
            key = str(key_node.value)  # as written: 'on' stays 'on', never True
            line = key_node.start_mark.line + 1
            if key in first_lines:
                self.problem(
                    key_node,
                    (*location, key),
                    f"duplicate key '{key}' (first on line {first_lines[key]}); give each key once",
                )
            first_lines[key] = line
            result[key] = self.value(value_node, (*location, key))
            self.document.lines[(*location, key)] = line
        return result

    def merge(self, node: yaml.Node, location: Location, into: dict[str, Any]) -> None:
        """`<<: *defaults` (or a list of them): their keys first, so the mapping's own keys override."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in reversed(sources):  # the first listed wins, as YAML's merge key defines
            merged = self.value(source, location)
            if isinstance(merged, dict):
                into.update(merged)
            else:
                self.problem(source, location, "'<<' merges only mappings")

    def problem(self, node: yaml.Node, location: Location, message: str) -> None:
        self.document.problems.append(Problem(node.start_mark.line + 1, dotted(location), message))
