"""The test harness itself: a broken adapter import fails, a missing framework skips
(fails under ``CI=true``), and the opt-out variables are honoured."""

from __future__ import annotations

import sys

import pytest

from tests import conftest, needs
from tests.http_clients import CLIENTS, framework_of


@pytest.fixture
def broken_client(monkeypatch: pytest.MonkeyPatch) -> str:
    """A client whose framework (``json``) is installed but whose module does not import,
    as when an adapter module has a broken import."""
    monkeypatch.setitem(sys.modules, "tests.http_clients._broken", None)  # import fails
    monkeypatch.setitem(CLIENTS, "json_broken", "tests.http_clients._broken:Client")
    return "json_broken"


def test_a_broken_adapter_import_fails_and_is_never_a_skip(broken_client: str) -> None:
    assert framework_of(broken_client) == "json"
    with pytest.raises(ImportError):
        conftest.load_client(broken_client)


def test_a_missing_framework_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(CLIENTS, "nosuchframework", "tests.http_clients.nosuch:Client")
    monkeypatch.setattr(needs, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="nosuchframework is not installed"):
        conftest.load_client("nosuchframework")
    monkeypatch.setattr(needs, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.load_client("nosuchframework")


def test_opt_out_variables_skip_even_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs, "IN_CI", True)
    monkeypatch.delenv("CHATKIT_TEST_NO_POSTGRES", raising=False)
    with pytest.raises(pytest.fail.Exception, match="CHATKIT_TEST_NO_POSTGRES=1"):
        needs.missing("PostgreSQL not available", "CHATKIT_TEST_NO_POSTGRES")
    monkeypatch.setenv("CHATKIT_TEST_NO_POSTGRES", "1")
    with pytest.raises(pytest.skip.Exception):
        needs.missing("PostgreSQL not available", "CHATKIT_TEST_NO_POSTGRES")


def test_module_of_a_missing_package_is_collected_under_ci_when_selected() -> None:
    assert conftest._selects("flask", "(flask or wsgi) and not reliability")
    assert not conftest._selects("reliability", "(flask or wsgi) and not reliability")
    assert conftest._selects("reliability", "")
