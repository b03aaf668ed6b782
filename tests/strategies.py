"""Hypothesis strategies for what peers send: every message type, read off the schema itself
(so a new field is fuzzed the day it is added), values inside and just outside their bounds,
and plain garbage.
"""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen
from hypothesis import strategies as st
from pydantic import BaseModel, StringConstraints

from bzzz import messages
from bzzz.messages import KINDS, MessageType, Reason

HIDDEN = [
    chr(code)
    for low, high in (
        (0x00, 0x08),
        (0x0B, 0x1F),
        (0x7F, 0x9F),
        (0x200B, 0x200F),
        (0x2028, 0x202E),
        (0x2060, 0x2069),
        (0xFEFF, 0xFEFF),
    )
    for code in range(low, high + 1)
]
_WHITESPACE = list("\t\n\x0b\x0c\r \x85\xa0\u1680\u202f\u205f\u3000") + [
    chr(c) for c in range(0x2000, 0x200B)
]


def _alphabet(pattern: str) -> st.SearchStrategy[str]:
    exclude = list(HIDDEN)
    if pattern != messages._TEXT:
        exclude += ["\t", "\n"]
    if pattern == messages._TOKEN:
        exclude += _WHITESPACE
    return st.characters(blacklist_categories=("Cs",), blacklist_characters=exclude)


def _string(constraints: StringConstraints) -> st.SearchStrategy[str]:
    pattern = constraints.pattern or ""
    low, high = constraints.min_length or 0, constraints.max_length or 64
    if pattern in (messages._TEXT, messages._LINE, messages._TOKEN):
        return st.text(_alphabet(str(pattern)), min_size=low, max_size=high)
    if "A-Za-z0-9_.-" in str(pattern):  # a repository
        part = st.text("abcXYZ019_.-", min_size=1, max_size=20)
        return st.one_of(st.just(""), st.builds(lambda o, n: f"{o}/{n}", part, part))
    if "0-9a-f" in str(pattern):  # a sha256
        return st.one_of(st.just(""), st.text("0123456789abcdef", min_size=64, max_size=64))
    if "A-Za-z0-9+/=" in str(pattern):  # base64
        return st.text("ABCxyz019+/=", max_size=high)
    return st.text(max_size=high)


def value_for(annotation: Any, metadata: list[Any] = ()) -> st.SearchStrategy[Any]:  # type: ignore[assignment]
    """A strategy for any value the annotated field admits."""
    metadata = list(metadata)
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return value_for(base, metadata + extra)
    if origin in (Union, types.UnionType):
        return st.one_of(*(value_for(arg, metadata) for arg in get_args(annotation)))
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        high = next((m.max_length for m in metadata if isinstance(m, MaxLen)), 8)
        return st.lists(value_for(item), max_size=min(high, 8)) | st.lists(
            value_for(item), min_size=high, max_size=high
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return data_for(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = next((m.ge for m in metadata if isinstance(m, Ge)), -(2**40))
        high = next((m.le for m in metadata if isinstance(m, Le)), 2**40)
        return st.integers(low, high)
    if annotation is float:
        low = next((m.ge for m in metadata if isinstance(m, Ge)), -1e9)
        high = next((m.le for m in metadata if isinstance(m, Le)), 1e9)
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if annotation is str:
        constraints = next((m for m in metadata if isinstance(m, StringConstraints)), None)
        low = next((m.min_length for m in metadata if isinstance(m, MinLen)), 0)
        if constraints is None:
            return st.text(min_size=low, max_size=32)
        return _string(constraints)
    raise TypeError(f"no strategy for {annotation!r}")


def data_for(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """A `data` object of `model` that its validators admit."""
    required, optional = {}, {}
    for name, field in model.model_fields.items():
        strategy = value_for(field.annotation, field.metadata)
        (required if field.is_required() else optional)[name] = strategy
    return st.fixed_dictionaries(required, optional=optional).filter(_admitted_by(model))


def _admitted_by(model: type[BaseModel]) -> Any:
    def check(data: dict[str, Any]) -> bool:
        try:
            model.model_validate(data)
        except ValueError:
            return False  # a cross-field rule (current_tasks <= max_tasks)
        return True

    return check


message_types = st.sampled_from(list(MessageType))


def envelope(msg_type: MessageType, data: dict[str, Any], sender: str, hop_count: int = 0) -> bytes:
    return json.dumps(
        {
            "type": msg_type.value,
            "from": sender,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": data,
            "hop_count": hop_count,
        },
        ensure_ascii=False,
    ).encode()


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[MessageType, dict[str, Any]]:
    msg_type = draw(message_types)
    return msg_type, draw(data_for(KINDS[msg_type].model))


def _breakers(annotation: Any, metadata: list[Any]) -> list[tuple[Any, Reason]]:
    """Values just outside what the field admits, with the reason the door must give."""
    metadata = list(metadata)
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return _breakers(base, metadata + extra)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _breakers(args[0], metadata) if len(args) == 1 else []
    out: list[tuple[Any, Reason]] = []
    if origin is list:
        high = next((m.max_length for m in metadata if isinstance(m, MaxLen)), None)
        if high is not None:
            out.append((["x"] * (high + 1), Reason.TOO_LARGE))
        out.append(("not a list", Reason.BAD_DATA))
    elif annotation is int:
        for m in metadata:
            if isinstance(m, Ge):
                out.append((m.ge - 1, Reason.BAD_VALUE))
            if isinstance(m, Le):
                out.append((m.le + 1, Reason.BAD_VALUE))
                out.append((10**4000, Reason.BAD_VALUE))
    elif annotation is float:
        out += [(-1.0, Reason.BAD_VALUE), (1e300, Reason.BAD_VALUE)]
    elif annotation is str:
        constraints = next((m for m in metadata if isinstance(m, StringConstraints)), None)
        if constraints is not None and constraints.max_length:
            out.append(("a" * (constraints.max_length + 1), Reason.TOO_LARGE))
        if constraints is not None and constraints.pattern:
            out += [("nul\x00", Reason.BAD_VALUE), ("\x1b[31mred", Reason.BAD_VALUE)]
            out.append(("bidi\u202e", Reason.BAD_VALUE))
        out.append(({"a": 1}, Reason.BAD_DATA))
    return out


@st.composite
def broken_messages(draw: st.DrawFn) -> tuple[MessageType, dict[str, Any], Reason]:
    """A valid message with one field set just outside its bounds, and the expected reason."""
    msg_type = draw(message_types)
    model = KINDS[msg_type].model
    data = draw(data_for(model))
    choices = [
        (name, value, reason)
        for name, field in model.model_fields.items()
        for value, reason in _breakers(field.annotation, field.metadata)
    ]
    name, value, reason = draw(st.sampled_from(choices))
    return msg_type, {**data, name: value}, reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def garbage(draw: st.DrawFn, sender: str) -> bytes:
    """Bytes a hostile peer might publish: noise, JSON of any shape, envelopes with wrong data,
    deep nesting, huge numbers."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    if kind == 2:
        msg_type = draw(message_types)
        return envelope(msg_type, draw(st.dictionaries(st.text(max_size=20), json_values)), sender)
    if kind == 3:
        depth = draw(st.integers(100, 30_000))
        return b'{"type":"objection","data":' + b"[" * depth + b"]" * depth + b"}"
    digits = draw(st.integers(20, 5000))
    body = envelope(MessageType.TASK_CLAIM, {"task_id": 1}, sender)
    return body.replace(b'"task_id": 1', b'"task_id": ' + b"9" * digits)
