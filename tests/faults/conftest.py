"""Prints the fault suite's table at the end of the run (it is also in test-artifacts/fault-suite.md)."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.faults.test_fault_suite import RESULTS, render_table

    if RESULTS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(render_table(RESULTS))
