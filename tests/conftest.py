"""Run-wide guard: a database connection a test left open fails the run at once, by name.

aiosqlite's connection thread is not a daemon, so one left open kept the interpreter alive after
the last test: a CI run that had finished its tests hung until the job was killed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

_LEAK_WAIT_SECONDS = 30
_session_status = 0


def _open_database_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.is_alive() and "_connection_worker_thread" in t.name]


def pytest_sessionfinish(session, exitstatus) -> None:
    global _session_status
    _session_status = int(exitstatus)


def pytest_unconfigure(config) -> None:
    deadline = time.monotonic() + _LEAK_WAIT_SECONDS
    while (leaked := _open_database_threads()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if leaked:
        sys.stderr.write(f"\n{len(leaked)} database connection(s) were left open by the tests "
                         "(Storage.close() never ran); failing rather than hanging at exit\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(_session_status or 1)
