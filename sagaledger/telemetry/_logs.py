"""JSON log lines that name the run, saga, step, phase and attempt being driven."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sagaledger.telemetry._context import current_run


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line.

    Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and
    ``message``; a line logged while a run is being driven (by sagaledger, a
    step, a connector: any code in the drive's thread) also has ``run_id``,
    ``saga``, ``version``, ``step``, ``phase`` and ``attempt``. A traceback goes
    in ``exception``. Lines outside a drive have no run fields.

    Usage::

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.getLogger().addHandler(handler)
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run = current_run()
        if run is not None:
            line.update(
                run_id=run.run_id,
                saga=run.saga,
                version=run.version,
                step=run.step,
                phase=run.phase,
                attempt=run.attempt,
            )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)
