"""Logging set-up: one format, noisy libraries held at WARNING, secrets replaced."""

from __future__ import annotations

import logging


class SecretFilter(logging.Filter):
    """Last line of defence: a secret that reaches a log record is replaced before output."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            for secret in self.secrets:
                if secret and secret in message:
                    message = message.replace(secret, "[redacted]")
            record.msg, record.args = message, None
        return True


def configure_logging(level: str) -> SecretFilter:
    """Log to stderr at `level`; returns the filter that keeps secrets out of the output (the
    runtime adds each transport's secrets to it once they are read)."""
    secret_filter = SecretFilter()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(secret_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These libraries log whole events, SQL parameters or request bodies at DEBUG, which would put
    # what people typed into the log; keep them to warnings whatever our level.
    for noisy in ("nio", "aiohttp", "aiosqlite", "peewee", "apscheduler.executors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return secret_filter
