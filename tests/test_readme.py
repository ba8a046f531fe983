"""Every Python snippet of the README runs as shown.

Each ```python block is executed on its own, with only the names the README leaves to the
reader defined beforehand (:data:`READER_SUPPLIES`: your ChatKit server, your context type,
your auth helpers, and ``app`` where a snippet adds a route to an app it did not create).
A snippet that forgets an import, or calls an API that does not exist, fails here.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.chatkit_app import make_server

pytestmark = pytest.mark.examples

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def snippets() -> list[Any]:
    blocks = []
    text = README.read_text()
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        code = textwrap.dedent(match.group(2))
        blocks.append(pytest.param(code, id=f"README.md:{line}"))
    return blocks


class MyContext(dict[str, Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(kwargs)


class User:
    id = "user_1"


async def current_user() -> User:
    return User()


def signed_in(connection: Any, handler: Any) -> None:
    """A Litestar guard."""


def main_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"main"]


def _app_for(code: str) -> Any:
    """The app a snippet adds routes to without creating it (``app.add_api_route`` ...)."""
    if "chatkit_adapters.fastapi" in code:
        from fastapi import FastAPI

        return FastAPI()
    if "chatkit_adapters.flask" in code:
        from flask import Flask

        return Flask("readme")
    from starlette.applications import Starlette

    return Starlette()


READER_SUPPLIES = ("server", "MyContext", "make_context", "current_user", "User", "signed_in")


@pytest.mark.parametrize("code", snippets())
def test_readme_snippet_runs(code: str) -> None:
    namespace: dict[str, Any] = {
        "__name__": "readme_snippet",
        "server": make_server(write_delay=0),
        "MyContext": MyContext,
        "make_context": lambda request: MyContext(),
        "current_user": current_user,
        "User": User,
        "signed_in": signed_in,
        "main_app": main_app,
    }
    if "app = " not in code and "app." in code:
        namespace["app"] = _app_for(code)
    # names only a function or lambda body uses are not looked up by exec: check them all
    unknown = _undefined_names(code) - set(namespace)
    assert not unknown, f"the snippet uses names it never defines or imports: {unknown}"
    exec(compile(code, "README.md", "exec"), namespace)


def _undefined_names(code: str) -> set[str]:
    tree = ast.parse(code)
    defined = set(dir(builtins))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return used - defined


def test_the_readme_has_snippets() -> None:
    assert len(snippets()) >= 9


def test_a_missing_import_is_caught() -> None:
    code = "app.on_shutdown.append(lambda app: chatkit_adapters.drain())"
    assert "chatkit_adapters" in _undefined_names(code)
