"""What can go wrong, as types: the CLI maps each to an exit code in one place.

`BadInput` (exit 2) is anything the user can fix before work starts: a spec,
a name, an address, a request the cluster can never satisfy.  Nothing was
started or recorded when it is raised.  Any other exception is a bug: the CLI
prints one line (`unexpected`) and keeps the traceback in a private file (exit 1).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn


class AmctlError(Exception):
    """Base of every error the platform reports to a person rather than as a traceback."""

    exit_code = 1

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message, self.problems = message, problems or []

    def __str__(self) -> str:
        return "\n  - ".join([self.message, *self.problems])


class BadInput(AmctlError):
    exit_code = 2


class UnknownSweep(BadInput):
    """No sweep or run by that name in the store."""


class SpecChanged(BadInput):
    """A sweep name already means another spec: relaunching it would mix two experiments."""


class SweepActive(BadInput):
    """Another live driver runs this sweep (launch, resume), or the command needs it stopped first (delete)."""


class ResourceError(BadInput):
    """A trial asks for more than any node of the cluster can ever offer."""


class StoreError(BadInput):
    """A store that cannot be opened: a home that is not a folder, a database file that is not a database."""


_held: tuple[list[bool], object] | None = None  # while interrupts are held: whether Ctrl-C came, the handler before


def hold_interrupts() -> None:
    """Hold Ctrl-C from here until `release_interrupts`, on the main thread.

    A launch's start-up imports libraries (some wrap imports in a bare `except`, which would swallow the
    KeyboardInterrupt) and opens its records (which must not be left half-open); the interrupt is raised
    where the launch can close what it opened.
    """
    global _held
    if _held is None and threading.current_thread() is threading.main_thread():
        came: list[bool] = []
        _held = (came, signal.signal(signal.SIGINT, lambda _signum, _frame: came.append(True)))


def release_interrupts(*, raise_held: bool = True) -> None:
    """Stop holding Ctrl-C and raise the KeyboardInterrupt it would have raised meanwhile (if `raise_held`)."""
    global _held
    if _held is None:
        return
    (came, previous), _held = _held, None
    signal.signal(signal.SIGINT, previous)
    if came and raise_held:
        raise KeyboardInterrupt


def unexpected(command: str, error: Exception, debug: bool) -> str:
    """What a bug prints: one line (what failed, the file that keeps its traceback, how to report it), so that a
    user is not handed a traceback to read; with `debug` (--debug), the traceback itself, and no file."""
    what = ": ".join([type(error).__name__, *str(error).splitlines()[:1]])
    trace = "".join(traceback.format_exception(error))
    if debug:
        return f"{command} failed unexpectedly ({what}):\n{trace.rstrip()}"
    return (f"{command} failed unexpectedly ({what}); the traceback is in {crash_log(trace)}: "
            "rerun with --debug to see it; to report it, send that file with the output of `amctl --version`")


def crash_log(text: str) -> Path:
    """Keep a traceback in a new private file, in AMCTL_HOME/logs, else (a home that cannot be written) in the temp folder.

    If not even that takes it, the OSError goes up and Python prints it chained to the bug: the traceback is never lost.
    """
    from amlab.platform.settings import Settings  # stdlib only: the CLI's error path imports no torch or Ray

    name = f"amctl-error-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}.log"
    try:
        return _write_private(Settings.load().home / "logs", name, text)
    except (StoreError, OSError):
        return _write_private(Path(tempfile.gettempdir()), name, text)


def _write_private(folder: Path, name: str, text: str) -> Path:
    """A new file, 0600 in a 0700 folder (a traceback shows paths and values); O_EXCL|O_NOFOLLOW, as the temp
    folder is shared: never through a file or link that someone else put there."""
    folder.mkdir(mode=0o700, exist_ok=True)
    with os.fdopen(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "w") as f:
        f.write(text)
    return folder / name


_ends_with_command = False  # set by run_then_exit


def ends_with_command() -> bool:
    """Whether this process ends when its one command does: the CLI's entry point (run_then_exit), not a test or a
    notebook calling the platform in-process.  A launch may then let Ray go as soon as its trials are over."""
    return _ends_with_command


def run_then_exit(app: Callable[[], object]) -> NoReturn:
    """Run the CLI, then leave without the interpreter's teardown (about a second once torch, Ray and MLflow are
    loaded, on every command).  What that teardown would do that matters is done first: output flushed, logging
    closed, and Ray shut down if this process started or joined it (an embedded Ray's processes stop with it,
    without waiting out its graceful teardown: ray_runtime.stop_ray_at_exit)."""
    import logging
    import sys

    global _ends_with_command
    _ends_with_command = True
    try:
        app()
        code = 0
    except SystemExit as e:  # how click ends every command
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    if "ray" in sys.modules:
        from amlab.platform.ray_runtime import stop_ray_at_exit

        stop_ray_at_exit()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
