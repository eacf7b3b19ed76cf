"""Generates docs/settings.md from the settings models (`python -m plumbing.settings_doc`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, SecretStr

from plumbing.settings import ENV_PREFIX, NESTED_DELIMITER, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def _default(model: type[BaseModel], name: str) -> str:
    value = model.model_fields[name].default
    if isinstance(value, SecretStr):
        return "(secret; local default)" if value.get_secret_value() else "(secret)"
    return "(unset)" if value is None else f"`{value}`"


def render() -> str:
    """Returns the Markdown listing every setting's variable and default."""
    lines = ["# Settings", "", "Every process reads its settings once, from the environment, at start-up. An `INGESTOR_…`",
             "variable that names no setting stops the process with an error. Generated from",
             "`plumbing/settings.py` by `python -m plumbing.settings_doc`.", ""]
    for group, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        lines += [f"## {group}", "", (model.__doc__ or "").strip(), "", "| variable | default |", "|---|---|"]
        for name in model.model_fields:
            lines.append(f"| `{ENV_PREFIX}{group.upper()}{NESTED_DELIMITER}{name.upper()}` | {_default(model, name)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
