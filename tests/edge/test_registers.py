from __future__ import annotations

from pathlib import Path

import pytest

from edge.registers import Point, RegisterMapError, decode, encode, sunspec_map


def test_map_loads_with_every_model_the_agent_needs():
    regmap = sunspec_map()
    assert {1, 101, 103, 124, 160, 201, 202, 203, 204} <= set(regmap.models)
    assert regmap.markers == [0, 40000, 50000]
    assert regmap.models[124].points["InWRte"].writable


@pytest.mark.parametrize(
    ("point", "value", "scale", "registers"),
    [
        (Point(offset=0, type="int16", sf="X"), -1500.0, 0, [0x10000 - 1500]),
        (Point(offset=0, type="uint16", sf="X"), 87.5, -1, [875]),
        (Point(offset=0, type="acc32", sf="X"), 123456.0, 0, [1, 57920]),
        (Point(offset=0, type="string", size=2), "SunS", 0, [0x5375, 0x6E53]),
        (Point(offset=0, type="int16", sf="X"), None, 0, [0x8000]),
        (Point(offset=0, type="uint16"), None, 0, [0xFFFF]),
    ],
)
def test_encode_and_decode_round_trip(point, value, scale, registers):
    assert encode(point, value, scale) == registers
    assert decode(point, registers, scale) == value


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(RegisterMapError, match="does not fit"):
        encode(Point(offset=0, type="int16", sf="X"), 40_000, 0)
    with pytest.raises(RegisterMapError, match="does not fit"):
        encode(Point(offset=0, type="uint16", sf="X"), -1, 0)


def test_scaled_point_without_its_scale_factor_reads_as_unknown():
    assert decode(Point(offset=0, type="int16", sf="W_SF"), [100], None) is None


def test_invalid_map_names_the_problem(tmp_path: Path):
    bad = tmp_path / "map.yaml"
    bad.write_text(
        "markers: [40000]\nmodels:\n  1:\n    name: common\n    length: 2\n"
        "    points:\n      W: {offset: 1, type: int16, sf: W_SF}\n"
    )
    with pytest.raises(RegisterMapError, match="unknown scale factor W_SF"):
        sunspec_map(bad)


@pytest.mark.parametrize("raw", [11, 0x7FFF, 0x10000 - 11, 0x8001])
def test_a_scale_factor_outside_sunspecs_range_reads_as_unknown(raw):
    # SunSpec scale factors are -10..10; a buggy device's 0x7FFF would overflow 10.0**sf.
    sf = Point(offset=0, type="sunssf")
    assert decode(sf, [raw]) is None
    assert decode(sf, [10]) == 10
    assert decode(sf, [0x10000 - 10]) == -10


def test_a_string_of_all_0xffff_is_not_implemented():
    # What a buggy device returns for an empty string point instead of NULs.
    assert decode(Point(offset=0, type="string", size=4), [0xFFFF] * 4) is None
    assert decode(Point(offset=0, type="string", size=2), [0x41FF, 0xFFFF]) == "A\ufffd\ufffd\ufffd"
