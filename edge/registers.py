"""The SunSpec register map (`sunspec.yaml`): validated data, plus point encoding.

A point's raw registers decode to a number (times 10^sf for scaled points), a string,
or None when the device marks it "not implemented".
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF

PointType = Literal[
    "int16", "uint16", "sunssf", "enum16", "bitfield16", "acc32", "bitfield32", "string"
]
_WIDTH = {"acc32": 2, "bitfield32": 2}
_NOT_IMPLEMENTED = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc32": 0,
}
_SIGNED = {"int16", "sunssf"}
# SunSpec scale factors are -10..10: a buggy device's 0x7FFF would overflow 10.0**sf.
_SCALE_FACTORS = range(-10, 11)
# The string a buggy device serves for an empty point (SunSpec's own is all NULs).
_EMPTY_STRING_REGISTER = 0xFFFF


class RegisterMapError(Exception):
    """The register map file is invalid, or a value does not fit its point."""


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offset: int = Field(ge=0)
    type: PointType
    size: int = Field(default=1, ge=1)
    sf: str | None = None
    units: str | None = None
    writable: bool = False

    @property
    def width(self) -> int:
        """Registers the point occupies."""
        return self.size if self.type == "string" else _WIDTH.get(self.type, 1)


class Repeating(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int
    size: int
    points: dict[str, Point]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    length: int
    points: dict[str, Point]
    repeating: Repeating | None = None

    @model_validator(mode="after")
    def _points_fit(self) -> Model:
        for name, point in self.points.items():
            if point.offset + point.width > self.length:
                raise ValueError(f"{self.name}.{name} ends past the model length")
            if point.sf is not None and point.sf not in self.points:
                raise ValueError(f"{self.name}.{name}: unknown scale factor {point.sf}")
        return self


class RegisterMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    markers: list[int]
    models: dict[int, Model]


DEFAULT_MAP = Path(__file__).with_name("sunspec.yaml")


@cache
def sunspec_map(path: Path = DEFAULT_MAP) -> RegisterMap:
    """The validated register map; raises RegisterMapError naming what is wrong."""
    try:
        return RegisterMap.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise RegisterMapError(f"{path}: {exc}") from exc


def decode(point: Point, registers: list[int], scale: int | None = None) -> float | str | None:
    """A point's value from its registers; None when not implemented (or, for a scale
    factor, outside SunSpec's -10..10)."""
    if point.type == "string":
        if all(r == _EMPTY_STRING_REGISTER for r in registers[: point.size]):
            return None
        raw = b"".join(r.to_bytes(2, "big") for r in registers[: point.size])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    value = registers[0]
    if point.width == 2:
        value = (registers[0] << 16) | registers[1]
    if value == _NOT_IMPLEMENTED[point.type]:
        return None
    if point.type in _SIGNED and value >= 0x8000:
        value -= 0x10000
    if point.type == "sunssf" and value not in _SCALE_FACTORS:
        return None
    if point.sf is None:
        return value
    if scale is None:
        return None
    return value * 10.0**scale


def encode(point: Point, value: float | str | None, scale: int = 0) -> list[int]:
    """Registers holding `value` (divided by 10^scale for scaled points); None encodes
    "not implemented". Raises RegisterMapError if the value does not fit."""
    if point.type == "string":
        raw = str(value or "").encode()[: point.size * 2].ljust(point.size * 2, b"\0")
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if value is None:
        number = _NOT_IMPLEMENTED[point.type]
    else:
        number = round(float(value) / 10.0**scale) if point.sf else int(value)
        low, high = (-0x7FFF, 0x7FFF) if point.type in _SIGNED else (0, 2 ** (16 * point.width) - 2)
        if not low <= number <= high:
            raise RegisterMapError(f"{value} does not fit a {point.type} point (scale {scale})")
        number &= 0xFFFF if point.width == 1 else 0xFFFFFFFF
    if point.width == 2:
        return [(number >> 16) & 0xFFFF, number & 0xFFFF]
    return [number]
