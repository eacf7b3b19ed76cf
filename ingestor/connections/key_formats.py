"""Stripe key and webhook-secret format checks and masking for the connection flow (invariant 5).

Place in the flow: when a user pastes a key on the connector page, the control API calls
`classify_key` before anything else — before the key is tested against Stripe, encrypted by the vault
or stored — and `validate_webhook_secret` for the signing-secret field. Only restricted keys
(``rk_live_…``, ``rk_test_…``) are accepted, because the user limits them to read access; a secret key
can write and move money. Wherever a key is shown again it goes through `mask_key`
(``rk_live_…wxyz``), and `mask_secrets_in_text` lets the logging layer mask anything key-shaped.

Shape rules: a key is a known prefix followed by ASCII letters and digits only. The body after the
prefix must be 20–500 characters: Stripe's shortest keys have 24-character bodies, and Stripe asks
integrators to allow keys up to 255 characters, so these bounds leave room on both sides while
refusing truncated copies and pasted documents. Surrounding whitespace is stripped; anything inside a
key (spaces, quotes, "…" copied from a masked display) makes it malformed.

Nothing here ever puts a key into a message, a code or a `repr`: messages depend only on the
outcome (and live/test mode), and the masked form shows at most the last four characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from ingestor.errors import IngestError
from ingestor.stripe_api.catalog import OPTIONAL_READ_ACCESS, READ_ACCESS
from plumbing.masking import SECRET_PATTERN, mask_key, mask_secrets_in_text

__all__ = [
    "API_KEY_IN_WEBHOOK_SECRET_FIELD",
    "MALFORMED_KEY",
    "MALFORMED_WEBHOOK_SECRET",
    "PUBLISHABLE_KEY_REFUSED",
    "RESTRICTED_KEY",
    "SECRET_KEY_REFUSED",
    "SECRET_PATTERN",
    "WEBHOOK_SECRET",
    "WEBHOOK_SECRET_IN_KEY_FIELD",
    "KeyCheck",
    "Mode",
    "StripeKeyError",
    "classify_key",
    "mask_key",
    "mask_secrets_in_text",
    "validate_webhook_secret",
]

Mode = Literal["live", "test"]

# Stable codes: the control API returns them and the connector page and docs/operating.md key on them.
RESTRICTED_KEY: Final = "restricted_key"
SECRET_KEY_REFUSED: Final = "secret_key_refused"
PUBLISHABLE_KEY_REFUSED: Final = "publishable_key_refused"
WEBHOOK_SECRET_IN_KEY_FIELD: Final = "webhook_secret_in_key_field"
MALFORMED_KEY: Final = "malformed_key"
WEBHOOK_SECRET: Final = "webhook_secret"
API_KEY_IN_WEBHOOK_SECRET_FIELD: Final = "api_key_in_webhook_secret_field"
MALFORMED_WEBHOOK_SECRET: Final = "malformed_webhook_secret"

MIN_BODY_LENGTH: Final = 20
MAX_BODY_LENGTH: Final = 500
_API_KEY_FAMILY: Final = re.compile(r"(?P<kind>sk|rk|pk)_")
_API_KEY: Final = re.compile(
    rf"(?P<kind>sk|rk|pk)_(?P<mode>live|test)_[A-Za-z0-9]{{{MIN_BODY_LENGTH},{MAX_BODY_LENGTH}}}"
)
_WEBHOOK_SECRET: Final = re.compile(rf"whsec_[A-Za-z0-9+/=]{{{MIN_BODY_LENGTH},{MAX_BODY_LENGTH}}}")

_HOW_TO_MAKE_A_RESTRICTED_KEY: Final = (
    'In the Stripe Dashboard, go to Developers → API keys and click "Create restricted key". '
    f'Give it a name, set {READ_ACCESS} (and {OPTIONAL_READ_ACCESS}) to '
    '"Read", leave everything else at "None", and create the key. Then paste the new key here: '
    "it starts with {prefix}."
)


class StripeKeyError(IngestError):
    """A pasted key or webhook secret was refused; `code` is stable, `message` is for the user."""

    retriable = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)
        self.message = message


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The verdict on a pasted key or secret: accepted or not, why, and how to show it."""

    accepted: bool
    code: str
    message: str
    mode: Mode | None = None
    masked: str = ""
    # The stripped key, set only when accepted; kept out of repr so a logged verdict shows no secret.
    key: str = field(default="", repr=False)

    def raise_if_refused(self) -> None:
        """Raise StripeKeyError with this verdict's code and message unless it was accepted."""
        if not self.accepted:
            raise StripeKeyError(self.code, self.message)


def classify_key(key: str) -> KeyCheck:
    """Say whether a pasted API key is an acceptable restricted key, and if not, why in plain words."""
    stripped = key.strip()
    masked = mask_key(stripped)
    if stripped.startswith("whsec_"):
        return _refused(WEBHOOK_SECRET_IN_KEY_FIELD, _WEBHOOK_SECRET_IN_KEY_FIELD_MESSAGE, masked)
    family = _API_KEY_FAMILY.match(stripped)
    kind = family.group("kind") if family else None
    if kind == "sk":
        # Refused whatever its body looks like: the user needs to hear "secret key", not "malformed".
        mode = _mode_of(stripped)
        return _refused(SECRET_KEY_REFUSED, _secret_key_message(mode), masked, mode)
    if kind == "pk":
        return _refused(PUBLISHABLE_KEY_REFUSED, _PUBLISHABLE_KEY_MESSAGE, masked)
    shape = _API_KEY.fullmatch(stripped)
    if shape is None:
        if not stripped:
            return _refused(MALFORMED_KEY, _EMPTY_KEY_MESSAGE, masked)
        message = _INCOMPLETE_RESTRICTED_KEY_MESSAGE if kind == "rk" else _NOT_A_KEY_MESSAGE
        return _refused(MALFORMED_KEY, message, masked)
    key_mode: Mode = "live" if shape.group("mode") == "live" else "test"
    return KeyCheck(
        accepted=True,
        code=RESTRICTED_KEY,
        message=f"This is a restricted {key_mode}-mode key.",
        mode=key_mode,
        masked=masked,
        key=stripped,
    )


def validate_webhook_secret(secret: str) -> KeyCheck:
    """Say whether a pasted webhook signing secret looks right, and if not, why in plain words."""
    stripped = secret.strip()
    masked = mask_key(stripped)
    if _WEBHOOK_SECRET.fullmatch(stripped):
        return KeyCheck(
            accepted=True,
            code=WEBHOOK_SECRET,
            message="This is a webhook signing secret.",
            masked=masked,
            key=stripped,
        )
    if _API_KEY_FAMILY.match(stripped):
        return _refused(API_KEY_IN_WEBHOOK_SECRET_FIELD, _API_KEY_IN_SECRET_FIELD_MESSAGE, masked)
    return _refused(MALFORMED_WEBHOOK_SECRET, _MALFORMED_WEBHOOK_SECRET_MESSAGE, masked)


def _refused(code: str, message: str, masked: str, mode: Mode | None = None) -> KeyCheck:
    """Build a refusal verdict."""
    return KeyCheck(accepted=False, code=code, message=message, mode=mode, masked=masked)


def _mode_of(key: str) -> Mode | None:
    """Return the mode named by an API key's prefix, if it names one."""
    if key[3:8] == "live_":
        return "live"
    if key[3:8] == "test_":
        return "test"
    return None


def _secret_key_message(mode: Mode | None) -> str:
    """Explain why a secret key is refused and how to make a restricted one."""
    shown = f"sk_{mode}_…" if mode else "sk_…"
    wanted = f"rk_{mode}_" if mode else "rk_live_ (rk_test_ in test mode)"
    return (
        f"This is a secret key ({shown}). A secret key can change everything in your Stripe "
        "account, including moving money, so we never accept one. We only need to read your data, "
        "so please create a restricted key instead. "
        + _HOW_TO_MAKE_A_RESTRICTED_KEY.format(prefix=wanted)
    )


_PUBLISHABLE_KEY_MESSAGE: Final = (
    "This is a publishable key (pk_…). Publishable keys are meant for your checkout page and "
    "cannot read customers, charges, subscriptions or invoices. Please create a restricted key "
    "instead. " + _HOW_TO_MAKE_A_RESTRICTED_KEY.format(prefix="rk_live_ (rk_test_ in test mode)")
)
_WEBHOOK_SECRET_IN_KEY_FIELD_MESSAGE: Final = (
    "This is a webhook signing secret (whsec_…), not an API key. Paste it into the "
    '"Webhook signing secret" field instead. This field needs a restricted API key, which '
    "starts with rk_live_ (rk_test_ in test mode)."
)
_EMPTY_KEY_MESSAGE: Final = (
    "No key was entered. Paste a restricted API key: it starts with rk_live_ (rk_test_ in test mode)."
)
_INCOMPLETE_RESTRICTED_KEY_MESSAGE: Final = (
    "This starts like a restricted key but is incomplete or has extra characters in it. A "
    "restricted key is rk_live_ or rk_test_ followed by letters and digits only. Copy the whole "
    "key again from the Stripe Dashboard (Developers → API keys) and paste it here."
)
_NOT_A_KEY_MESSAGE: Final = (
    "This is not a Stripe API key. Paste a restricted key: it starts with rk_live_ "
    "(rk_test_ in test mode) followed by letters and digits, with no spaces. "
    + _HOW_TO_MAKE_A_RESTRICTED_KEY.format(prefix="rk_live_ (rk_test_ in test mode)")
)
_API_KEY_IN_SECRET_FIELD_MESSAGE: Final = (
    "This is an API key, not a webhook signing secret. The signing secret starts with whsec_: in "
    "the Stripe Dashboard, open Developers → Webhooks, choose the endpoint with your webhook URL "
    'and click "Reveal" under "Signing secret". The restricted API key goes in the key field.'
)
_MALFORMED_WEBHOOK_SECRET_MESSAGE: Final = (
    "This is not a webhook signing secret. It starts with whsec_: in the Stripe Dashboard, open "
    'Developers → Webhooks, choose the endpoint with your webhook URL and click "Reveal" under '
    '"Signing secret", then copy the whole value.'
)
