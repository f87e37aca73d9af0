from __future__ import annotations

import io
import json
import logging

from learnd.adapters.logs import setup_logging


def test_json_lines_carry_event_names_and_fields():
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        logging.getLogger("learnd.test").info(
            "checkpoint written", extra={"event": "checkpoint", "positions": {0: 12, 1: 7}}
        )
        logging.getLogger("learnd.test").debug("hidden", extra={"event": "publish"})
    finally:
        setup_logging("WARNING", "text")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["event"] == "checkpoint" and rec["positions"] == {"0": 12, "1": 7}
    assert rec["level"] == "INFO" and rec["msg"] == "checkpoint written" and rec["ts"].endswith("Z")


def test_text_lines_show_extras():
    stream = io.StringIO()
    setup_logging("INFO", "text", stream=stream)
    try:
        logging.getLogger("learnd.test").warning(
            "drift alarm", extra={"event": "drift_alarm", "at_event": 5}
        )
    finally:
        setup_logging("WARNING", "text")
    assert "drift alarm {'at_event': 5}" in stream.getvalue()
