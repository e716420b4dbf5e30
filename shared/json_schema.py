"""JSON Schemas of the typed wire formats: a ``TypedDict`` (``shared/schemas.py``) or a dataclass
(``JobTypePolicy``) becomes the schema the OpenAPI document publishes, so the types the code is
checked against and the schemas clients read cannot drift apart.

    JobRecord (TypedDict) ──▶ {"type": "object", "properties": {...}, "required": [...]}
      ├─ a field's ``#:`` comment ─▶ its "description"
      ├─ X | None ───────────────▶ {"anyOf": [X, {"type": "null"}]}
      ├─ Literal["a", "b"], an Enum ▶ {"enum": ["a", "b"]}
      ├─ NotRequired[X] ─────────▶ X, left out of "required"
      └─ a nested TypedDict ─────▶ {"$ref": "#/components/schemas/<Name>"}, added to ``components``
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from typing import Any, NotRequired, Required, get_args, get_origin, get_type_hints, is_typeddict

__all__ = ["SchemaSet"]

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}
_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:")


def field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comments above each field of a class body (as Sphinx reads them), by field name."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # a functional TypedDict, or no source shipped
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif (match := _FIELD.match(line)) and pending:
            comments[match.group(1)] = " ".join(pending)
            pending = []
        elif not stripped.startswith("#"):
            pending = []
    return comments


class SchemaSet:
    """Schemas of Python types, with every named type kept once in ``components`` and referred to
    by ``$ref`` (OpenAPI's ``#/components/schemas``)."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Keeps a schema written elsewhere (a request body's, the error shape) under ``name``."""
        self.components[name] = schema
        return self.ref(name)

    def of(self, tp: Any) -> dict[str, Any]:
        """The schema of a type annotation."""
        if tp in _SCALARS:
            return dict(_SCALARS[tp])
        if tp is Any or tp is object:
            return {}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [member.value for member in tp]}
        if is_typeddict(tp):
            return self._typeddict(tp)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.dataclass(tp)
        origin, args = get_origin(tp), get_args(tp)
        if origin in (NotRequired, Required):
            return self.of(args[0])
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [self.of(arg) for arg in args]}
        if origin in (list, tuple) and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
            return {"type": "array", "items": self.of(args[0]) if args else {}}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.of(args[1]) if args else {}}
        if tp is dict:
            return {"type": "object"}
        if tp is list:
            return {"type": "array"}
        raise TypeError(f"no JSON Schema for {tp!r}")

    def _typeddict(self, cls: Any) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # reserved first: a type may refer to itself
            hints = get_type_hints(cls, include_extras=True)
            docs = field_comments(cls)
            properties = {field: self._described(self.of(tp), docs.get(field)) for field, tp in hints.items()}
            # from the resolved hints: under ``from __future__ import annotations`` __required_keys__
            # cannot see a NotRequired written as a string (Python < 3.14)
            required = [f for f, tp in hints.items()
                        if get_origin(tp) is Required or (get_origin(tp) is not NotRequired and cls.__total__)]
            schema: dict[str, Any] = {"type": "object", "properties": properties, "required": sorted(required)}
            if cls.__doc__ and not cls.__doc__.startswith(f"{name}("):
                schema["description"] = inspect.cleandoc(cls.__doc__)
            self.components[name] = schema
        return self.ref(name)

    def dataclass(self, cls: type, *, leave_out: frozenset[str] = frozenset(),
                  override: dict[str, Any] | None = None) -> dict[str, Any]:
        """A dataclass as JSON (``asdict``): every field is present, less ``leave_out``; ``override``
        replaces the schema of a field whose JSON is not its Python type."""
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}
            hints = get_type_hints(cls)
            docs = field_comments(cls)
            properties = {}
            for f in dataclasses.fields(cls):
                if f.name in leave_out:
                    continue
                schema = (override or {}).get(f.name) or self.of(hints[f.name])
                properties[f.name] = self._described(schema, docs.get(f.name))
            self.components[name] = {"type": "object", "properties": properties, "required": list(properties)}
        return self.ref(name)

    @staticmethod
    def _described(schema: dict[str, Any], description: str | None) -> dict[str, Any]:
        # OpenAPI 3.1 allows a description next to a $ref
        return {**schema, "description": description} if description else schema
