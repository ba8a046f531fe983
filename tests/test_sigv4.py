"""Presigned URLs against a real S3-compatible server (SeaweedFS, started by the tests):
what the signature binds, the bucket enforces."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from chatkit_adapters._sigv4 import Credentials, presign
from tests.s3server import S3Server, s3  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.s3

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56


def _credentials(server: S3Server) -> Credentials:
    return Credentials(server.access_key, server.secret_key, server.region)


def _put_url(server: S3Server, key: str, length: int, content_type: str, **kw: object) -> str:
    return presign(
        "PUT",
        server.endpoint,
        server.bucket,
        key,
        _credentials(server),
        expires=60,
        headers={"content-length": str(length), "content-type": content_type},
        **kw,  # type: ignore[arg-type]
    )


def test_presigned_put_binds_length_and_type(s3: S3Server) -> None:  # noqa: F811
    key = "sigv4/bound image.png"  # a space: the key is encoded in the canonical URI
    url = _put_url(s3, key, len(PNG), "image/png")
    with httpx.Client() as client:
        longer = client.put(url, content=PNG + b"x", headers={"content-type": "image/png"})
        assert longer.status_code == 403, longer.text
        other_type = client.put(url, content=PNG, headers={"content-type": "text/html"})
        assert other_type.status_code == 403, other_type.text
        ok = client.put(url, content=PNG, headers={"content-type": "image/png"})
        assert ok.status_code == 200, ok.text
        got = client.get(presign("GET", s3.endpoint, s3.bucket, key, _credentials(s3), expires=60))
        assert got.status_code == 200 and got.content == PNG


def test_presigned_get_overrides_type_and_disposition(s3: S3Server) -> None:  # noqa: F811
    key = "sigv4/page.html"
    body = b"<script>alert(1)</script>"
    with httpx.Client() as client:
        assert (
            client.put(
                _put_url(s3, key, len(body), "text/html"),
                content=body,
                headers={"content-type": "text/html"},
            ).status_code
            == 200
        )
        url = presign(
            "GET",
            s3.endpoint,
            s3.bucket,
            key,
            _credentials(s3),
            expires=60,
            query={
                "response-content-type": "application/octet-stream",
                "response-content-disposition": "attachment; filename*=UTF-8''page.html",
            },
        )
        got = client.get(url)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment")
        tampered = url.replace("octet-stream", "html")
        assert client.get(tampered).status_code == 403


def test_expired_and_wrong_secret_are_refused(s3: S3Server) -> None:  # noqa: F811
    key = "sigv4/expiry.bin"
    with httpx.Client() as client:
        assert (
            client.put(
                _put_url(s3, key, 3, "application/octet-stream"),
                content=b"abc",
                headers={"content-type": "application/octet-stream"},
            ).status_code
            == 200
        )
        old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
        expired = presign("GET", s3.endpoint, s3.bucket, key, _credentials(s3), expires=60, now=old)
        assert client.get(expired).status_code == 403
        wrong = Credentials(s3.access_key, s3.secret_key + "x", s3.region)
        assert (
            client.get(presign("GET", s3.endpoint, s3.bucket, key, wrong, expires=60)).status_code
            == 403
        )
        fresh = presign("GET", s3.endpoint, s3.bucket, key, _credentials(s3), expires=60)
        assert client.get(fresh).content == b"abc"


def test_arguments_are_checked() -> None:
    creds = Credentials("AK", "SK")
    with pytest.raises(ValueError):
        presign("GET", "http://h", "b", "k", creds, expires=0)
    with pytest.raises(ValueError):
        presign("GET", "ftp://h", "b", "k", creds, expires=60)
    assert "SK" not in repr(creds)
