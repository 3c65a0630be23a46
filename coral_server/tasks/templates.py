"""Pipeline templates: `${root.path}` references in a step's arguments, checked, then rendered.

Syntax (also in the README):

* `${params.x}`: the payload's `params` (`${params.repo.path}` goes into objects, `${params.list.0}`
  into lists by index);
* `${steps.<id>.field}`: the output of an earlier step, by its `id` or its `save_as` name;
* `${event.x}`: the payload of the event that fired the run (`POST /events`; nothing otherwise);
* `${run.id}`, `${run.attempt}`, `${run.trigger}` (cron, rrule, once, event, manual), `${run.task_id}`,
  and for an event's run `${run.topic}` and `${run.source}` (the `source_agent_id` that sent it);
* `${now}`: when the step starts, ISO-8601 UTC (`2026-11-29T19:40:00.000Z`).

A string that is exactly one reference becomes the referenced value with its JSON type (an object,
a number...); a reference inside a longer string is written as text (strings as they are, anything
else as JSON). `$${` is a literal `${`. A reference to something that is not there fails the step
(non-retryable: retrying would not make it appear), except in an `if`, where it is simply false.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

ROOTS = ("params", "steps", "event", "run", "now")
RUN_FIELDS = ("id", "attempt", "trigger", "task_id", "topic", "source")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*|[0-9]+")
_TOKEN = re.compile(r"\$\$\{|\$\{")
FALSE_WORDS = frozenset({"", "false", "0", "no", "off", "null", "none"})


class TemplateInvalid(ValueError):
    """A template that cannot be read (unclosed, empty, unknown root, bad path); `at` is where it is
    in the value `references` walked (`.body.items[0]`)."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.message, self.at = message, at


class TemplateMissing(LookupError):
    """A reference to a value that is not there when the step runs."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One `${...}` reference: its root (`params`, `steps`...) and the path below it."""

    root: str
    path: tuple[str, ...]

    @property
    def text(self) -> str:
        return "${" + ".".join((self.root, *self.path)) + "}"


Part = str | Ref


def parse(text: str) -> list[Part]:
    """The literal text and references of `text`, or `TemplateInvalid` saying what is wrong."""
    parts: list[Part] = []
    pos = 0
    literal = ""
    for match in _TOKEN.finditer(text):
        if match.start() < pos:
            continue  # inside a reference already read
        literal += text[pos : match.start()]
        if match.group() == "$${":
            literal += "${"
            pos = match.end()
            continue
        end = text.find("}", match.end())
        if end < 0:
            raise TemplateInvalid(f"unclosed '${{' at character {match.start()}")
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(_ref(text[match.end() : end].strip()))
        pos = end + 1
    literal += text[pos:]
    if literal:
        parts.append(literal)
    return parts


def _ref(inner: str) -> Ref:
    if not inner:
        raise TemplateInvalid("empty reference '${}'")
    names = inner.split(".")
    root, path = names[0], tuple(names[1:])
    if root not in ROOTS:
        raise TemplateInvalid(f"unknown reference '${{{inner}}}': it must start with {', '.join(ROOTS)}")
    for name in path:
        if not _NAME.fullmatch(name):
            raise TemplateInvalid(f"bad name {name!r} in '${{{inner}}}'")
    if root == "now" and path:
        raise TemplateInvalid(f"'${{now}}' has no fields ('${{{inner}}}')")
    if root == "steps" and not path:
        raise TemplateInvalid("'${steps}' needs a step: '${steps.<id>}' or '${steps.<id>.field}'")
    if root == "run" and (len(path) != 1 or path[0] not in RUN_FIELDS):
        raise TemplateInvalid(f"'${{{inner}}}': run has the fields {', '.join(RUN_FIELDS)}")
    return Ref(root, path)


def references(value: Any, at: str = "") -> Iterator[tuple[str, Ref]]:
    """Every reference in a JSON value, with where it is (`.url`, `.body.items[0]`); raises
    `TemplateInvalid` (its message prefixed with that place) for an unreadable template."""
    if isinstance(value, str):
        try:
            parts = parse(value)
        except TemplateInvalid as exc:
            raise TemplateInvalid(exc.message, at) from None
        for part in parts:
            if isinstance(part, Ref):
                yield at, part
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from references(item, f"{at}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references(item, f"{at}[{index}]")


def has_references(value: Any) -> bool:
    return next(references(value), None) is not None


def lookup(scope: Mapping[str, Any], ref: Ref) -> Any:
    """The value `ref` names in `scope`, or `TemplateMissing` naming the first name not found."""
    value: Any = scope.get(ref.root)
    if value is None and ref.root != "event":
        raise TemplateMissing(f"{ref.text}: '{ref.root}' is not set")
    if value is None:
        value = {}
    walked = ref.root
    for name in ref.path:
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            raise TemplateMissing(f"{ref.text}: {walked} has no {name!r}")
        walked += f".{name}"
    return value


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """`value` with every reference replaced (see the module's docstring); `TemplateMissing` if one
    names nothing."""
    if isinstance(value, str):
        parts = parse(value)
        if len(parts) == 1 and isinstance(parts[0], Ref):
            return lookup(scope, parts[0])
        return "".join(p if isinstance(p, str) else as_text(lookup(scope, p)) for p in parts)
    if isinstance(value, Mapping):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    return value


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def truthy(condition: bool | str, scope: Mapping[str, Any]) -> bool:
    """An `if`: a boolean, or a template whose value is false when missing, null, false, 0, empty, or
    one of the words false/no/off/null/none/0 (any case)."""
    if isinstance(condition, bool):
        return condition
    try:
        value = render(condition, scope)
    except TemplateMissing:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_WORDS
    return bool(value)
