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


class LibraryMessageFilter(logging.Filter):
    """matrix-nio quotes whole events, bodies included, in some warnings ("Error validating event:
    <the validation error and the event>"). From the libraries that see events, only what comes
    before the first colon of a record is kept, and never a traceback's text."""

    LIBRARIES = ("nio",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in self.LIBRARIES:
            head, colon, _ = record.getMessage().partition(":")
            record.msg = head + (": [details withheld: they can quote a message]" if colon else "")
            record.args = None
            if record.exc_info and record.exc_info[0] is not None:
                record.msg += f" ({record.exc_info[0].__name__})"
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def configure_logging(level: str) -> SecretFilter:
    """Log to stderr at `level`; returns the filter that keeps secrets out of the output (the
    runtime adds each transport's secrets to it once they are read)."""
    secret_filter = SecretFilter()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(LibraryMessageFilter())
    handler.addFilter(secret_filter)
    # A handler that fails would print the exception being handled, which can quote an event.
    logging.raiseExceptions = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These libraries log whole events, SQL parameters or request bodies at DEBUG, which would put
    # what people typed into the log; keep them to warnings whatever our level.
    for noisy in ("nio", "aiohttp", "aiosqlite", "peewee", "apscheduler.executors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return secret_filter
