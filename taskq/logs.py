"""The worker's log: text lines or JSON objects, to standard error or a file.

Set up once in the supervisor; the worker processes it forks inherit it. A
record may carry task fields (``task``, ``task_id``, ``attempt``, ``outcome``,
``duration_ms``, given as ``extra``): the JSON format writes them as keys of
their own, so a log pipeline can filter by task without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

TEXT_FORMAT = "[%(asctime)s %(levelname)s %(processName)s %(process)d] %(message)s"
TASK_FIELDS = ("task", "task_id", "attempt", "outcome", "duration_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": record.processName,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in TASK_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, logfile: str = "", log_format: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile, encoding="utf-8")
        if logfile
        else logging.StreamHandler(sys.stderr)
    )
    logging.Formatter.converter = time.gmtime  # UTC, for reload.py's clock too
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
