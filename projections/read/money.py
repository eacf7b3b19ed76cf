"""Minor units shown as money a person reads: `4350` EUR → `€43.50`, `98402` JPY → `¥98,402`.

Stripe's amounts are integers in the currency's smallest unit; how many decimals that unit has is
Stripe's rule (https://docs.stripe.com/currencies#zero-decimal), which differs from ISO 4217 for a few
currencies (ISK and UGX, say), so the exponent is Stripe's and the symbol, grouping and sign come from
CLDR through Babel. `analytics.currency_units` (migration 0006) holds the same zero-decimal list. Pure.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from babel.numbers import format_currency

# Stripe's zero-decimal currencies: an amount of 500 JPY is ¥500.
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
                          "xaf", "xof", "xpf"})
# Stripe's three-decimal currencies: 5124 BHD is 5.124 BHD.
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def decimals(currency: str) -> int:
    """Returns how many digits the currency's major unit has after the point, by Stripe's rule."""
    code = currency.lower()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def major_units(minor: int | str | Decimal, currency: str) -> Decimal:
    """Returns the amount in major units, exact (MRR may carry fractions of a minor unit)."""
    return Decimal(str(minor)).scaleb(-decimals(currency))


def format_money(minor: int | str | Decimal, currency: str, locale: str = "en_US") -> str:
    """Returns e.g. "€43.50" for 4350 eur: rounded half-even to the currency's minor unit, never a float."""
    digits = decimals(currency)
    amount = major_units(minor, currency).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)
    pattern = "¤#,##0" + ("." + "0" * digits if digits else "")
    return str(format_currency(amount, currency.upper(), format=pattern, locale=locale, currency_digits=False))
