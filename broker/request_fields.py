"""The control API's request fields: each checks a JSON value and describes itself as
JSON Schema, so the validation and the OpenAPI document cannot drift apart.

The control API has four request bodies and one query parameter. A model library (pydantic,
with FastAPI on top) cost the daemon about 18 MiB and 0.1-0.2 s on its first control request
for them; these few classes do the same job (see bench/README.md, issue 15).
Checks are JSON's own types, strictly: "true" is not a boolean and 7 is not a profile name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Invalid(Exception):
    """A value a field refuses. Only field names are ever reported: a rejected value may be
    an MFA code or a token."""


@dataclass(frozen=True)
class Text:
    pattern: str | None = None  # anchored with ^...$ so JSON Schema (a search) and we agree
    max_length: int | None = None
    compiled: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern) if self.pattern else None)

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid
        if self.max_length is not None and len(value) > self.max_length:
            raise Invalid
        # fullmatch: Python's $ would also match before a final newline.
        if self.compiled is not None and not self.compiled.fullmatch(value):
            raise Invalid
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


@dataclass(frozen=True)
class Flag:
    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Number:
    """A JSON number within bounds; `whole` for an integer (3600.0 is one, 3600.5 is not)."""

    whole: bool = False
    above: float | None = None  # exclusive
    at_least: float | None = None
    at_most: float | None = None

    def check(self, value: Any) -> float | int:
        # bool is an int in Python, never a number in JSON.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer of hundreds of digits: no number of seconds
            raise Invalid from None
        if not finite:
            raise Invalid
        if self.whole:
            if value != int(value):
                raise Invalid
            value = int(value)
        if ((self.above is not None and not value > self.above)
                or (self.at_least is not None and value < self.at_least)
                or (self.at_most is not None and value > self.at_most)):
            raise Invalid
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer" if self.whole else "number"}
        for key, bound in (("exclusiveMinimum", self.above), ("minimum", self.at_least), ("maximum", self.at_most)):
            if bound is not None:
                schema[key] = bound
        return schema


@dataclass(frozen=True)
class TextList:
    max_items: int

    def check(self, value: Any) -> list[str]:
        if not isinstance(value, list) or len(value) > self.max_items or not all(isinstance(v, str) for v in value):
            raise Invalid
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string"}, "maxItems": self.max_items}


FieldKind = Text | Flag | Number | TextList


@dataclass(frozen=True)
class Field:
    kind: FieldKind
    required: bool = False
    default: Any = None
    nullable: bool = False  # null is accepted and means the default

    def schema(self) -> dict[str, Any]:
        schema = self.kind.schema()
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if not self.required:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Body:
    """A JSON object request body. Unknown members are ignored, as pydantic did: a newer CLI
    may send a field an older daemon does not know yet."""

    name: str  # the schema's name in the OpenAPI document
    fields: Mapping[str, Field] = field(default_factory=dict)

    def parse(self, value: Any) -> tuple[dict[str, Any], list[str]]:
        """The checked values (defaults filled in) and the names of the fields that failed."""
        if not isinstance(value, dict):
            return {}, ["body"]
        parsed: dict[str, Any] = {}
        bad: list[str] = []
        for name, spec in self.fields.items():
            if name not in value:
                if spec.required:
                    bad.append(f"body.{name}")
                # A fresh copy of a list default: the handler may keep what it gets.
                parsed[name] = list(spec.default) if isinstance(spec.default, list) else spec.default
                continue
            raw = value[name]
            if raw is None and spec.nullable:
                parsed[name] = None
                continue
            try:
                parsed[name] = spec.kind.check(raw)
            except Invalid:
                bad.append(f"body.{name}")
        return parsed, bad

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object", "title": self.name,
            "properties": {name: spec.schema() for name, spec in self.fields.items()},
        }
        required = [name for name, spec in self.fields.items() if spec.required]
        if required:
            schema["required"] = required
        return schema
