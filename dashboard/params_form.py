"""Parameter widgets built from a registry entry's pydantic `Params` JSON schema.

A new architecture, balancer or dataset shows up on the Launch page with its parameters and
no UI change: integers and floats become number inputs with the schema's bounds, enums and
Literals selectboxes, booleans checkboxes, lists comma-separated text and anything else JSON text.

`field_specs` (schema -> FieldSpec list) and `parse_text` are pure and unit-tested; `render_params`
draws the widgets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class FieldSpec:
    name: str
    title: str
    kind: str  # bool | int | float | enum | text | list | json | weights
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    options: tuple[Any, ...] = ()
    help: str = ""
    required: bool = False
    nullable: bool = False
    item_type: str = "string"


def _unwrap(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Resolve $ref and Optional (anyOf [X, null]); return (schema of X, nullable)."""
    prop = dict(prop)
    nullable = False
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        if len(options) == 1:
            merged = {k: v for k, v in prop.items() if k != "anyOf"}
            merged.update(options[0])
            prop = merged
    if "$ref" in prop:
        ref = str(prop["$ref"]).rsplit("/", 1)[-1]
        merged = dict(defs.get(ref, {}))
        merged.update({k: v for k, v in prop.items() if k != "$ref"})
        prop = merged
    if "allOf" in prop and len(prop["allOf"]) == 1:
        inner, _ = _unwrap(prop["allOf"][0], defs)
        merged = dict(inner)
        merged.update({k: v for k, v in prop.items() if k != "allOf"})
        prop = merged
    return prop, nullable


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        if f.is_required():
            continue
        try:
            out[name] = f.get_default(call_default_factory=True)
        except TypeError:
            out[name] = f.get_default()
    return out


def field_specs(model: type[BaseModel]) -> list[FieldSpec]:
    """One FieldSpec per field of `model`, in declaration order."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    defaults = _defaults(model)
    specs: list[FieldSpec] = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _unwrap(raw, defs)
        typ = prop.get("type")
        lo = prop.get("minimum", prop.get("exclusiveMinimum"))
        hi = prop.get("maximum", prop.get("exclusiveMaximum"))
        common = {
            "name": name,
            "title": str(prop.get("title") or name.replace("_", " ").capitalize()),
            "default": defaults.get(name),
            "help": str(prop.get("description") or ""),
            "required": name in required,
            "nullable": nullable,
        }
        if "enum" in prop or "const" in prop:
            options = tuple(prop.get("enum") or [prop.get("const")])
            specs.append(FieldSpec(kind="enum", options=options, **common))
        elif typ == "boolean":
            specs.append(FieldSpec(kind="bool", **common))
        elif typ == "integer":
            specs.append(FieldSpec(kind="int", minimum=lo, maximum=hi, **common))
        elif typ == "number":
            specs.append(FieldSpec(kind="float", minimum=lo, maximum=hi, **common))
        elif typ == "string":
            specs.append(FieldSpec(kind="text", **common))
        elif typ == "array":
            item = prop.get("items", {})
            item, _ = _unwrap(item, defs) if isinstance(item, Mapping) else ({}, False)
            specs.append(FieldSpec(kind="list", item_type=str(item.get("type", "string")), **common))
        elif (
            typ == "object"
            and isinstance(prop.get("additionalProperties"), Mapping)
            and prop["additionalProperties"].get("type") == "number"
        ):
            specs.append(FieldSpec(kind="weights", **common))
        else:
            specs.append(FieldSpec(kind="json", **common))
    return specs


def format_list(values: Any) -> str:
    if values is None:
        return ""
    return ", ".join(str(v) for v in values)


def parse_text(spec: FieldSpec, text: str) -> Any:
    """Parse a text widget's content for a list/json/text field; '' means 'not given' (None).
    Raises ValueError with a readable message."""
    text = text.strip()
    if not text:
        return None
    if spec.kind == "list":
        parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
        if spec.item_type == "integer":
            try:
                return [int(p) for p in parts]
            except ValueError:
                raise ValueError(
                    f"{spec.title}: expected whole numbers separated by commas, got {text!r}"
                ) from None
        if spec.item_type == "number":
            try:
                return [float(p) for p in parts]
            except ValueError:
                raise ValueError(
                    f"{spec.title}: expected numbers separated by commas, got {text!r}"
                ) from None
        return parts
    if spec.kind in ("json", "weights"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{spec.title}: not valid JSON ({e.msg})") from None
    return text


def _number_args(spec: FieldSpec, value: Any) -> dict[str, Any]:
    is_int = spec.kind == "int"
    conv: Callable[[Any], Any] = int if is_int else float
    args: dict[str, Any] = {}
    if spec.minimum is not None and math.isfinite(spec.minimum) and abs(spec.minimum) < 1e15:
        args["min_value"] = conv(spec.minimum)
    if spec.maximum is not None and math.isfinite(spec.maximum) and abs(spec.maximum) < 1e15:
        args["max_value"] = conv(spec.maximum)
    v = (
        value
        if value is not None
        else (spec.default if spec.default is not None else args.get("min_value", 0))
    )
    v = conv(v)
    if "min_value" in args:
        v = max(v, args["min_value"])
    if "max_value" in args:
        v = min(v, args["max_value"])
    args["value"] = v
    if is_int:
        args["step"] = 1
    else:
        mag = abs(float(spec.default or v or 0.1))
        step = 10 ** math.floor(math.log10(mag)) / 10 if mag > 0 else 0.01
        args["step"] = float(min(max(step, 1e-6), 1.0))
        args["format"] = "%.6g" if mag < 0.001 else ("%.4f" if mag < 0.1 else "%.3f")
    return args


def render_params(
    model: type[BaseModel],
    key_prefix: str,
    values: Mapping[str, Any] | None = None,
    skip: tuple[str, ...] = (),
    columns: int = 2,
) -> tuple[dict[str, Any], list[str]]:
    """Draw one widget per field; return (params dict for the config, parse errors).

    Fields left empty (text/list/json) are left out so the model's default applies; `skip`
    names fields the caller handles itself (e.g. task weights).
    """
    import streamlit as st

    values = dict(values or {})
    out: dict[str, Any] = {}
    errors: list[str] = []
    specs = [s for s in field_specs(model) if s.name not in skip]
    if not specs:
        st.caption("No parameters.")
        return out, errors
    cols = st.columns(min(columns, len(specs)))
    for i, spec in enumerate(specs):
        key = f"{key_prefix}:{spec.name}"
        current = values.get(spec.name, spec.default)
        label = spec.title + (" *" if spec.required else "")
        with cols[i % len(cols)]:
            if spec.kind == "bool":
                out[spec.name] = st.checkbox(label, value=bool(current), key=key, help=spec.help or None)
            elif spec.kind in ("int", "float"):
                if spec.nullable and current is None:
                    text = st.text_input(
                        label, value="", key=key, help=(spec.help + " (empty = default)").strip()
                    )
                    if text.strip():
                        try:
                            out[spec.name] = int(text) if spec.kind == "int" else float(text)
                        except ValueError:
                            errors.append(f"{spec.title}: {text!r} is not a number")
                    continue
                out[spec.name] = st.number_input(
                    label, key=key, help=spec.help or None, **_number_args(spec, current)
                )
            elif spec.kind == "enum":
                options = list(spec.options)
                index = options.index(current) if current in options else 0
                out[spec.name] = st.selectbox(label, options, index=index, key=key, help=spec.help or None)
            else:
                if spec.kind == "list":
                    shown = format_list(current)
                elif spec.kind in ("json", "weights"):
                    shown = json.dumps(current) if current is not None else ""
                else:
                    shown = "" if current is None else str(current)
                text = st.text_input(label, value=shown, key=key, help=spec.help or None)
                try:
                    parsed = parse_text(spec, text)
                except ValueError as e:
                    errors.append(str(e))
                    continue
                if parsed is not None:
                    out[spec.name] = parsed
    return out, errors
