"""What can go wrong, as types: the CLI maps each to an exit code in one place.

`BadInput` (exit 2) is anything the user can fix before work starts: a spec,
a name, an address, a request the cluster can never satisfy.  Nothing was
started or recorded when it is raised.
"""

from __future__ import annotations


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
    """The command needs a sweep that is not running (delete)."""


class ResourceError(BadInput):
    """A trial asks for more than any node of the cluster can ever offer."""


class StoreError(BadInput):
    """A store that cannot be opened: a home that is not a folder, a database file that is not a database."""
