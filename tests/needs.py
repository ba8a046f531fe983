"""What a test needs from the machine, and what happens when it is absent.

Locally, a missing framework, PostgreSQL or Chromium skips the tests that need it, saying
why. Under ``CI=true`` (``.ci/run`` sets it) the same absence fails the run: CI installs
everything, so a skip there would hide a broken install behind a green run. A local run
that goes without something on purpose says so with an opt-out variable
(``CHATKIT_TEST_NO_POSTGRES=1``, ``CHATKIT_TEST_NO_BROWSER=1``), honoured everywhere.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def opted_out(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


def missing(reason: str, opt_out: str | None = None) -> NoReturn:
    """The running test's requirement is absent: skip it with *reason*; under ``CI=true``
    fail instead, unless the opt-out variable *opt_out* is set."""
    if opt_out is not None and opted_out(opt_out):
        pytest.skip(f"{reason} (going without it: {opt_out} is set)")
    if IN_CI:
        hint = f" (set {opt_out}=1 to go without it on purpose)" if opt_out else ""
        pytest.fail(f"CI=true and {reason}{hint}", pytrace=False)
    pytest.skip(reason)


def installed(package: str) -> bool:
    """Whether the top-level *package* is installed, found without importing it (so an
    installed package whose import fails is not mistaken for an absent one)."""
    return importlib.util.find_spec(package) is not None


def require_package(package: str) -> None:
    """Skip the running test when *package* is not installed (fail under ``CI=true``)."""
    if not installed(package):
        missing(f"{package} is not installed")
