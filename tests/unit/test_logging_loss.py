"""A log line that cannot be written is dropped and counted, never raised into the caller."""

from __future__ import annotations

import contextlib
import os
import sys

import pytest
import structlog

from kds.logging import configure_logging, lost_log_lines


def test_logging_to_a_closed_pipe_neither_raises_nor_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write gets EPIPE
    broken = os.fdopen(write, "w")
    # In the test body: pytest's output capture resets sys.stderr between phases.
    monkeypatch.setattr(sys, "stderr", broken)
    try:
        configure_logging("info", "json")
        log = structlog.get_logger("test")
        before = lost_log_lines()
        log.info("stopping", signal="SIGTERM")
        log.warning("still alive")
        assert lost_log_lines() == before + 2
    finally:
        structlog.reset_defaults()
        with contextlib.suppress(OSError):
            broken.close()
