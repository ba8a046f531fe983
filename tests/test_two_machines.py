"""Several machines: two application servers, separate processes as two machines would be,
share one PostgreSQL database and one S3-compatible bucket (SeaweedFS). A file uploaded
through one is previewed, downloaded and deleted through the other, and a signed URL minted
by one is accepted by the other (the secret comes from the shared environment)."""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from chatkit_adapters.attachments import SECRET_ENV, Attachments
from tests.pgserver import postgres_url  # noqa: F401  (the session fixture)
from tests.realserver import free_port, serving
from tests.s3server import S3Server, s3  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.s3

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(120))
ALICE = {"x-user-id": "alice"}


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture
def machines(
    s3: S3Server,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[str, str]]:
    env = {
        "DATABASE_URL": postgres_url,
        "ATTACHMENTS_URL": s3.url(f"machines-{uuid.uuid4().hex}"),
        SECRET_ENV: "a secret both machines share",
        "DEMO_WORD_DELAY": "0.001",
        **s3.environ(),
    }
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        for index, port in enumerate(ports):
            argv = [
                sys.executable, "-m", "uvicorn", "examples.starlette_app:app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            ]  # fmt: skip
            stack.enter_context(
                serving(argv, tmp_path / f"machine{index}.log", lambda p=port: _answers(p), env)
            )
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"


def _on(base: str, url: str) -> str:
    """*url* (made by one machine) sent to the machine at *base* instead."""
    parts = urlsplit(url)
    return f"{base}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def test_upload_on_one_machine_preview_download_delete_on_the_other(
    machines: tuple[str, str],
) -> None:
    first, second = machines
    with httpx.Client(timeout=30) as client:
        uploaded = client.post(
            f"{first}/chatkit/attachments", files={"file": ("dot.png", PNG, "image/png")},
            headers=ALICE,
        )  # fmt: skip
        assert uploaded.status_code == 200, uploaded.text
        attachment = uploaded.json()
        assert attachment["preview_url"].startswith(f"{first}/chatkit/attachments/")

        # the signed preview URL minted by the first machine, on the second: no credentials
        preview = client.get(_on(second, attachment["preview_url"]))
        assert preview.status_code == 302, preview.text
        bucket = client.get(preview.headers["location"])
        assert bucket.status_code == 200 and bucket.content == PNG
        assert bucket.headers["content-type"] == "image/png"

        content = f"{second}/chatkit/attachments/{attachment['id']}/content"
        assert client.get(content, headers={"x-user-id": "mallory"}).status_code == 404
        download = client.get(content, headers=ALICE, follow_redirects=True)
        assert download.status_code == 200 and download.content == PNG

        delete = {"type": "attachments.delete", "params": {"attachment_id": attachment["id"]}}
        answer = client.post(
            f"{second}/chatkit", content=json.dumps(delete),
            headers={"content-type": "application/json", **ALICE},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        gone = client.get(f"{first}/chatkit/attachments/{attachment['id']}/content", headers=ALICE)
        assert gone.status_code == 404
        assert client.get(_on(first, attachment["preview_url"])).status_code == 404


def test_without_a_shared_secret_a_process_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.warns(UserWarning, match="work only in this process"):
        Attachments("memory://")
    monkeypatch.setenv(SECRET_ENV, "shared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Attachments("memory://")
