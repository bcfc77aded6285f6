"""kds.logging.debug_enabled follows the level in force, reloads included."""

from __future__ import annotations

import structlog

from kds import logging as kds_logging
from kds.logging import debug_enabled, switch_logging


def test_debug_enabled_follows_the_level_in_force() -> None:
    switch = kds_logging._switch
    saved = (switch.level, switch.renderer)
    try:
        switch_logging("info", "json")
        assert not debug_enabled()
        switch_logging("debug", "json")  # a reload turning debug on
        assert debug_enabled()
        with structlog.testing.capture_logs() as logs:
            structlog.get_logger("t").debug("seen")
        assert [e["event"] for e in logs] == ["seen"]
        switch_logging("warning", "console")
        assert not debug_enabled()
    finally:
        switch.level, switch.renderer = saved
