"""A strict reader for the small YAML subset of exporter-toolkit web configs.

Block mappings and lists, plain and quoted one-line scalars, one-line
``[a, b]`` lists and comments. Anything else (anchors, tags, block scalars,
flow mappings, several documents, duplicate keys) is refused with its line
number rather than half understood; docs/web-config.md says why this is not
PyYAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class YamlScalar:
    text: str
    line: int
    # Unquoted, so YAML reads `true`, `10` or `null` as a type, not text.
    plain: bool


@dataclass(frozen=True)
class YamlList:
    items: tuple[YamlScalar, ...]
    line: int


@dataclass(frozen=True)
class YamlMap:
    # key -> (line of the key, value); None is a key with nothing after it.
    entries: dict[str, tuple[int, YamlNode]]
    line: int


YamlNode = YamlScalar | YamlList | YamlMap | None


class YamlError(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    text: str


_ESCAPES = dict(zip('"\\/ 0abefnrtv', '"\\/ \0\a\b\x1b\f\n\r\t\v', strict=True))
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
NULLS = frozenset({"", "~", "null", "Null", "NULL"})
TRUE = frozenset({"true", "True", "TRUE"})
FALSE = frozenset({"false", "False", "FALSE"})
_FLOW_PLAIN = re.compile(r"[^,\[\]{}#]*")
_UNSUPPORTED_START = {
    "|": "block scalars (| and >) are not supported: put the value on one line",
    ">": "block scalars (| and >) are not supported: put the value on one line",
    "&": "anchors (&) are not supported: write the value out",
    "*": "aliases (*) are not supported: write the value out",
    "!": "tags (!) are not supported: write the plain value",
    "{": "flow mappings ({...}) are not supported: write one key per line",
    "%": "a value cannot start with %: quote it",
    "@": "a value cannot start with @: quote it",
    "`": "a value cannot start with `: quote it",
    "?": "complex keys (?) are not supported",
}


def parse_yaml_subset(text: str) -> YamlMap:
    """The mapping a web config file holds; :class:`YamlError` names the line."""
    lines = _content_lines(text)
    if not lines:
        return YamlMap({}, 1)

    first = lines[0]
    if _is_item(first.text):
        raise YamlError(first.number, "the file must hold keys, not a list")
    parser = _Parser(lines)
    root = parser.mapping(first.indent)
    if parser.at < len(lines):
        raise YamlError(lines[parser.at].number, "unexpected indentation")
    return root


def _content_lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.lstrip(" ")
        if content.startswith("\t"):
            raise YamlError(
                number, "a tab in the indentation: YAML indents with spaces"
            )
        if not content.strip() or content.startswith("#"):
            continue

        marker = content.split(" #", 1)[0].rstrip()
        if marker == "---" and not lines and content == raw:
            continue  # the optional start of the one document
        if marker in ("---", "..."):
            raise YamlError(number, "only one YAML document is allowed")
        if content.startswith("%"):
            raise YamlError(number, "YAML directives (%) are not supported")
        lines.append(_Line(number, len(raw) - len(content), content.rstrip()))
    return lines


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


class _Parser:
    """Block structure by indentation; one value per line."""

    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self.at = 0

    def mapping(self, indent: int) -> YamlMap:
        entries: dict[str, tuple[int, YamlNode]] = {}
        start = self.lines[self.at].number
        while self.at < len(self.lines):
            line = self.lines[self.at]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise YamlError(line.number, "unexpected indentation")
            if _is_item(line.text):
                raise YamlError(line.number, "a list item where a key was expected")

            key, rest = _split_key(line)
            if key in entries:
                raise YamlError(
                    line.number,
                    f"{quoted(key)} repeats the key of line {entries[key][0]}",
                )
            self.at += 1
            value = _inline(rest, line.number) if rest else self._nested(indent)
            entries[key] = (line.number, value)
        return YamlMap(entries, start)

    def _nested(self, indent: int) -> YamlNode:
        if self.at >= len(self.lines):
            return None
        following = self.lines[self.at]
        if following.indent > indent:
            if _is_item(following.text):
                return self.sequence(following.indent)
            return self.mapping(following.indent)
        # YAML lets a list sit at its key's own indentation.
        if following.indent == indent and _is_item(following.text):
            return self.sequence(indent)
        return None

    def sequence(self, indent: int) -> YamlList:
        items = []
        start = self.lines[self.at].number
        while self.at < len(self.lines):
            line = self.lines[self.at]
            if line.indent < indent or not _is_item(line.text):
                if line.indent > indent:
                    raise YamlError(line.number, "unexpected indentation")
                break
            if line.indent > indent:
                raise YamlError(line.number, "unexpected indentation")

            rest = line.text[1:].strip()
            value = _inline(rest, line.number) if rest else None
            if not isinstance(value, YamlScalar):
                raise YamlError(line.number, "each list item must be one value")
            items.append(value)
            self.at += 1
        return YamlList(tuple(items), start)


def _split_key(line: _Line) -> tuple[str, str]:
    text = line.text
    if text[0] in "\"'":
        key, end = _quoted(text, 0, line.number)
        after = text[end:].lstrip(" ")
        if not after.startswith(":") or after[1:2] not in ("", " "):
            raise YamlError(line.number, 'expected ":" after the quoted key')
        rest = after[1:]
    else:
        if text[0] in _UNSUPPORTED_START or text[0] in "[]},":
            reason = _UNSUPPORTED_START.get(
                text[0], f"a key cannot start with {text[0]}"
            )
            raise YamlError(line.number, reason)
        found = re.match(r"(.*?):(?: |$)", text)
        if found is None or re.search(r"\s#", found.group(1)):
            raise YamlError(line.number, 'expected "key: value"')
        key = found.group(1).rstrip()
        rest = text[found.end() :]

    rest = rest.strip()
    return key, "" if rest.startswith("#") else rest


def _inline(text: str, number: int) -> YamlNode:
    """A value on its key's line (or after ``- ``): scalar or one-line list."""
    first = text[0]
    if first in "\"'":
        value, end = _quoted(text, 0, number)
        _expect_end(text[end:], number)
        return YamlScalar(value, number, plain=False)
    if first == "[":
        return _flow_list(text, number)
    if text.startswith("{}"):
        _expect_end(text[2:], number)
        return YamlMap({}, number)
    if first in _UNSUPPORTED_START:
        raise YamlError(number, _UNSUPPORTED_START[first])
    if first in "]},":
        raise YamlError(number, f"a value cannot start with {first}: quote it")
    if _is_item(text):
        raise YamlError(number, "a list starts on the line after its key")

    value = re.split(r"\s#", text, maxsplit=1)[0].rstrip()
    if ": " in value or value.endswith(":"):
        raise YamlError(number, 'a value holding ": " must be quoted')
    return YamlScalar(value, number, plain=True)


def _quoted(text: str, start: int, number: int) -> tuple[str, int]:
    """The quoted scalar at ``start``, and the index just past its quote."""
    quote = text[start]
    out: list[str] = []
    at = start + 1
    while at < len(text):
        char = text[at]
        if quote == "'" and char == "'":
            if text[at + 1 : at + 2] != "'":
                return "".join(out), at + 1
            out.append("'")
            at += 2
        elif quote == '"' and char == '"':
            return "".join(out), at + 1
        elif quote == '"' and char == "\\":
            escape, at = _escape(text, at, number)
            out.append(escape)
        else:
            out.append(char)
            at += 1
    raise YamlError(number, "the quoted value does not end on its line")


def _escape(text: str, at: int, number: int) -> tuple[str, int]:
    kind = text[at + 1 : at + 2]
    if kind in _ESCAPES:
        return _ESCAPES[kind], at + 2

    width = _HEX_ESCAPES.get(kind)
    digits = text[at + 2 : at + 2 + width] if width else ""
    if width is None or not re.fullmatch(f"[0-9A-Fa-f]{{{width}}}", digits):
        raise YamlError(number, f"unknown escape \\{kind} in a quoted value")
    code = int(digits, 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise YamlError(number, f"\\{kind}{digits} is not a character")
    return chr(code), at + 2 + len(digits)


def _flow_list(text: str, number: int) -> YamlList:
    items = []
    at = 1
    while True:
        at = _skip_spaces(text, at)
        if at >= len(text):
            raise YamlError(number, "the [...] list does not end on its line")
        if text[at] == "]":
            at += 1
            break

        if text[at] in "\"'":
            value, at = _quoted(text, at, number)
            items.append(YamlScalar(value, number, plain=False))
        elif text[at] in "[{":
            raise YamlError(number, "nested lists and tables are not supported")
        else:
            found = _FLOW_PLAIN.match(text, at)
            assert found is not None  # the pattern matches the empty string
            value = found.group().strip()
            if not value:
                raise YamlError(number, "an empty item in the [...] list")
            items.append(YamlScalar(value, number, plain=True))
            at = found.end()

        at = _skip_spaces(text, at)
        if at >= len(text):
            raise YamlError(number, "the [...] list does not end on its line")
        if text[at] == ",":
            at += 1
        elif text[at] != "]":
            raise YamlError(number, 'expected "," or "]" in the [...] list')
    _expect_end(text[at:], number)
    return YamlList(tuple(items), number)


def _skip_spaces(text: str, at: int) -> int:
    while at < len(text) and text[at] == " ":
        at += 1
    return at


def _expect_end(rest: str, number: int) -> None:
    """Only a comment may follow a complete value, after a space."""
    if rest.strip() and not (rest[0].isspace() and rest.strip().startswith("#")):
        raise YamlError(number, f"unexpected {quoted(rest.strip())} after the value")


def quoted(text: str) -> str:
    """``text`` in double quotes for a message, escaped and shortened."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    shown = "".join(
        char if char.isprintable() else repr(char)[1:-1] for char in escaped
    )
    return f'"{shown}"' if len(shown) <= 60 else f'"{shown[:56]}..."'
