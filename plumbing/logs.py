"""Structured logs (JSON lines) for every process, with Stripe secrets masked on the way out.

All records — ours through structlog and third-party ones through stdlib `logging` (aiokafka,
aiohttp, asyncpg) — pass through one formatter whose last step masks anything shaped like a Stripe
key or webhook signing secret, so a secret that reaches a log call by accident is still not written.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from plumbing.masking import mask_secrets_in_text
from plumbing.settings import LogSettings


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets_in_text(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    if isinstance(value, BaseException):
        return mask_secrets_in_text(repr(value))
    return value


def mask_secrets_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: masks secrets in every value of the event, exceptions included."""
    return {key: _mask_value(value) for key, value in event_dict.items()}


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Routes structlog and stdlib logging through one secret-masking formatter to `stream`."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_secrets_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """Returns a structlog logger bound to `name`."""
    return structlog.get_logger(name)
