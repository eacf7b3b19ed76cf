"""Money as a person reads it: Stripe's minor units in the currency's major unit, never through a float."""

from __future__ import annotations

import re

import pytest

from projections import MIGRATIONS_DIR
from projections.read.money import ZERO_DECIMAL, format_money, major_units


@pytest.mark.parametrize("minor, currency, shown", [
    (4350, "eur", "€43.50"),
    (98402, "jpy", "¥98,402"),
    ("4350.000000", "usd", "$43.50"),  # MRR carries six decimals of a minor unit
    ("833.333333", "gbp", "£8.33"),  # a yearly £100 plan ÷ 12
    ("0.5", "usd", "$0.00"),  # half a cent rounds to even
    ("1.5", "usd", "$0.02"),
    (-12345, "usd", "-$123.45"),
    (5124, "bhd", "BHD5.124"),  # a three-decimal currency
    (123456789, "krw", "₩123,456,789"),
    (1000, "ugx", "UGX1,000"),  # zero-decimal at Stripe, two decimals in ISO 4217
])
def test_minor_units_read_as_money(minor: int | str, currency: str, shown: str) -> None:
    assert format_money(minor, currency) == shown


def test_major_units_are_exact() -> None:
    assert str(major_units("833.333333", "usd")) == "8.33333333"
    assert major_units(10**18 + 1, "usd") * 100 == 10**18 + 1


def test_the_database_and_the_cli_agree_on_zero_decimal_currencies() -> None:
    sql = (MIGRATIONS_DIR / "0006_analytics_views.sql").read_text()
    listed = re.search(r"CASE WHEN code IN \(([^)]*)\)", sql)
    assert listed is not None
    assert set(re.findall(r"'([a-z]{3})'", listed.group(1))) == ZERO_DECIMAL
