"""Wire formats, option checks and comparison by meaning."""

from __future__ import annotations

import pytest

from reconciler.errors import Location
from reconciler.properties import (
    Option,
    PropertyDefinition,
    Scalar,
    ValueProblem,
    check_wire_value,
    display_value,
    load_definitions,
    load_pipelines,
    parse_definitions,
    parse_pipelines,
    same_value,
    to_wire,
)
from tests.conftest import REAL_DATA, needs_shared

HERE = Location("deals.yaml", 1, 1)
NUMBER = PropertyDefinition("amount", "number", "number")
DATE = PropertyDefinition("renewal_date", "date", "date")
DATETIME = PropertyDefinition("closedate", "datetime", "date")
BOOL = PropertyDefinition("strategic", "bool", "booleancheckbox")
TEXT = PropertyDefinition("dealname", "string", "text")
REGION = PropertyDefinition(
    "region",
    "enumeration",
    "select",
    options=(Option("no", "Norway"), Option("se", "Sweden")),
)
COMPETITORS = PropertyDefinition(
    "competitors",
    "enumeration",
    "checkbox",
    options=(Option("globex", "Globex"), Option("initech", "Initech")),
)


def plain(text: str) -> Scalar:
    return Scalar(text, True, HERE)


def quoted(text: str) -> Scalar:
    return Scalar(text, False, HERE)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (plain("1.5e+16"), "15000000000000000"),
        (plain("0.1"), "0.1"),
        (plain("1000.0"), "1000.0"),
        (plain("120000"), "120000"),
        (plain("-0"), "0"),
        (quoted("1500.25"), "1500.25"),
        (plain("12345678901234567890.123456789"), "12345678901234567890.123456789"),
    ],
)
def test_numbers_are_sent_as_plain_decimals(value: Scalar, wire: str) -> None:
    assert to_wire(NUMBER, value) == wire


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (quoted("1,000.50"), "thousands separator"),
        (quoted("$1000"), "currency"),
        (quoted("1000 EUR"), "currency"),
        (plain("1e-14"), "exponent notation"),
        (quoted("1.5e3"), "exponent notation"),
        (plain(".nan"), "not a finite number"),
        (plain("-.inf"), "not a finite number"),
        (plain("0x1F"), "not a number"),
        (quoted("007"), "not a number"),
    ],
)
def test_numbers_reject_what_hubspot_would(value: Scalar, complaint: str) -> None:
    with pytest.raises(ValueProblem, match=complaint):
        to_wire(NUMBER, value)


def test_dates_become_midnight_utc_milliseconds() -> None:
    assert to_wire(DATE, plain("2024-03-01")) == "1709251200000"
    assert to_wire(DATE, plain("1709251200000")) == "1709251200000"
    assert to_wire(DATE, plain("1969-12-31")) == "-86400000"
    with pytest.raises(ValueProblem, match=r"at 18:47:31\.200 UTC, not midnight"):
        to_wire(DATE, plain("1709232451200"))
    with pytest.raises(ValueProblem, match="not a valid date"):
        to_wire(DATE, plain("2023-02-29"))
    with pytest.raises(ValueProblem, match="not a date"):
        to_wire(DATE, quoted("March 1st"))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("20270331", "looks like a date without dashes; write 2027-03-31"),
        ("0", "is not a date; write YYYY-MM-DD"),
        ("253402300800000", "outside the years 1 to 9999"),
        ("99999999999999999", "outside the years 1 to 9999"),
    ],
)
def test_date_numbers_that_cannot_be_dates(text: str, complaint: str) -> None:
    with pytest.raises(ValueProblem, match=complaint):
        to_wire(DATE, plain(text))


def test_display_never_fails_on_odd_values() -> None:
    assert display_value(DATE, "99999999999999999") == '"99999999999999999"'
    assert check_wire_value(DATE, "99999999999999999") == (
        "99999999999999999 is not a valid date."
    )


def test_datetimes_need_an_offset() -> None:
    assert to_wire(DATETIME, plain("2024-03-01T10:00:00Z")) == "1709287200000"
    assert to_wire(DATETIME, plain("2024-03-01T10:00:00.5-05:30")) == "1709307000500"
    assert to_wire(DATETIME, plain("2027-03-31")) == "1806451200000"
    assert to_wire(DATETIME, plain("1709287200123")) == "1709287200123"
    with pytest.raises(ValueProblem, match="no UTC offset"):
        to_wire(DATETIME, plain("2024-03-01T10:00"))
    with pytest.raises(ValueProblem, match="epoch seconds"):
        to_wire(DATETIME, plain("1709287200"))


def test_bool_takes_only_true_or_false() -> None:
    assert to_wire(BOOL, plain("true")) == "true"
    assert to_wire(BOOL, quoted("FALSE")) == "false"
    with pytest.raises(ValueProblem, match="true or false, not 'yes'"):
        to_wire(BOOL, plain("yes"))


def test_strings_keep_their_text_and_refuse_control_characters() -> None:
    assert to_wire(TEXT, plain("no")) == "no"
    assert to_wire(TEXT, plain("10:30")) == "10:30"
    assert to_wire(TEXT, quoted("")) == ""
    assert to_wire(TEXT, plain("null")) == ""
    assert to_wire(TEXT, quoted("null")) == "null"
    with pytest.raises(ValueProblem, match="control character"):
        to_wire(TEXT, quoted("bell\x07"))


def test_enumerations_take_option_values_not_labels() -> None:
    assert to_wire(REGION, plain("no")) == "no"
    with pytest.raises(ValueProblem, match="option label; use its value 'se'"):
        to_wire(REGION, quoted("Sweden"))
    with pytest.raises(ValueProblem, match="did you mean 'no'"):
        to_wire(REGION, quoted("NO"))
    with pytest.raises(ValueProblem, match="allowed options: 'no', 'se'"):
        to_wire(REGION, quoted("dk"))
    with pytest.raises(ValueProblem, match="not a list"):
        to_wire(REGION, [plain("no")])


def test_multi_select_takes_a_list_or_semicolons() -> None:
    assert to_wire(COMPETITORS, [plain("initech"), plain("globex")]) == "initech;globex"
    assert to_wire(COMPETITORS, quoted("globex; initech;globex")) == "globex;initech"
    assert to_wire(COMPETITORS, []) == ""
    with pytest.raises(ValueProblem, match="'acme'"):
        to_wire(COMPETITORS, [plain("acme")])


@pytest.mark.parametrize(
    ("definition", "current", "wire", "same"),
    [
        (NUMBER, "1500.00", "1500", True),
        (NUMBER, "1000", "1000.0", True),
        (
            NUMBER,
            "0.59999999999999997779553950749686919152736663818359375",
            "0.6",
            True,
        ),
        (NUMBER, "1500.01", "1500", False),
        (NUMBER, "9007199254740992", "9007199254740993", False),
        (
            NUMBER,
            "0.1000000000000000055511151231257827021181583404541015625",
            "0.1",
            True,
        ),
        (NUMBER, "1.5E+3", "1500", True),
        (NUMBER, None, "", True),
        (NUMBER, "", "0", False),
        (TEXT, None, "", True),
        (TEXT, "", "", True),
        (TEXT, "Keep", "keep", False),
        (TEXT, " padded", "padded", False),
        (DATE, "2024-03-01", "1709251200000", True),
        (DATETIME, "2017-03-01T00:00:00.000Z", "1488326400000", True),
        (DATETIME, "2017-03-01T00:00:00.001Z", "1488326400000", False),
        (COMPETITORS, "initech;globex", "globex;initech", True),
        (BOOL, "True", "true", True),
    ],
)
def test_same_value_compares_by_meaning(
    definition: PropertyDefinition, current: str | None, wire: str, same: bool
) -> None:
    assert same_value(definition, current, wire) is same


def test_display_value_shows_dates_readably() -> None:
    assert display_value(DATE, "1709251200000") == "2024-03-01 (1709251200000)"
    assert display_value(DATETIME, "1709287200000") == (
        "2024-03-01T10:00:00.000Z (1709287200000)"
    )
    assert display_value(TEXT, "") == "(empty)"
    assert display_value(TEXT, 'say "hi"') == '"say \\"hi\\""'


def test_check_wire_value_answers_like_hubspot() -> None:
    assert check_wire_value(NUMBER, "1.4210854715202004e-14") == (
        "1.4210854715202004e-14 was not a valid number."
    )
    assert (
        check_wire_value(DATE, "1709251200")
        == "1709251200 is at 18:47:31.200 UTC, not midnight!"
    )
    assert check_wire_value(REGION, "dk") is not None
    assert check_wire_value(COMPETITORS, "globex;initech") is None
    assert check_wire_value(NUMBER, "") is None


@needs_shared
def test_real_v1_definitions_mark_read_only_by_read_only_value() -> None:
    path = REAL_DATA / "real" / "v1_deal_properties__demo_portal_2020-01-31.json"
    definitions = load_definitions(path)
    assert len(definitions) == 59
    read_only = {name for name, d in definitions.items() if d.read_only or d.calculated}
    assert {"hs_deal_stage_probability", "days_to_close", "hs_object_id"} <= read_only
    assert "createdate" not in read_only
    assert "application_uuid2" in read_only
    assert definitions["dealtype"].option_values() == {
        "newbusiness",
        "existingbusiness",
        "closedwon",
        "Free Trial",
    }
    assert definitions["dealstage"].external_options is True


@needs_shared
def test_v1_and_v3_pipelines_read_alike() -> None:
    v1 = load_pipelines(
        REAL_DATA
        / "real"
        / "v1_deal_pipelines__crm-pipelines_v1__demo_portal_2020-01-31.json"
    )
    assert "closedwon" in v1["default"].stage_ids()
    assert len(v1) == 2
    v3 = load_pipelines(REAL_DATA / "crm-opportunities" / "pipelines.json")
    assert v3["default"].stage_ids() == v1["default"].stage_ids()
    assert parse_pipelines({"results": [{"id": "x", "archived": True}]}, "t") == {}


def test_shipped_definitions_load_from_the_package() -> None:
    definitions = load_definitions(None)
    assert definitions["amount"].type == "number"
    assert definitions["hs_object_id"].read_only is True
    assert parse_definitions([{"name": "x", "readOnlyValue": True}], "t")["x"].read_only


@pytest.mark.parametrize(
    ("definition", "value", "complaint"),
    [
        (NUMBER, plain("010"), "leading zero, which YAML 1.1 reads as octal; write 10"),
        (NUMBER, plain("1e3"), "write it as the plain decimal 1000"),
        (NUMBER, quoted("$1,500"), "currency sign"),
        (DATETIME, plain("2024-03-01T10:00:00+24:00"), r"\+24:00 is not a UTC offset"),
        (DATETIME, plain("2024-03-01T10:00:00+05:75"), "not a UTC offset"),
    ],
)
def test_ambiguous_or_impossible_values_are_refused(
    definition: PropertyDefinition, value: Scalar, complaint: str
) -> None:
    with pytest.raises(ValueProblem, match=complaint):
        to_wire(definition, value)


def test_far_offsets_in_use_are_accepted() -> None:
    assert to_wire(DATETIME, plain("2024-03-01T10:00:00+14:00")) == "1709236800000"
    assert to_wire(DATETIME, plain("2024-03-01T10:00:00+05:45")) == "1709266500000"


def test_every_kind_of_space_is_text() -> None:
    assert to_wire(TEXT, quoted("a\u00a0b\u200bc")) == "a\u00a0b\u200bc"
    assert to_wire(TEXT, quoted("tab\there")) == "tab\there"
