"""Presigned S3 URLs (AWS Signature Version 4, query-string form), standard library only.

Why our own: ``obstore.sign()`` signs the host only, so it can bind neither the
``Content-Length`` nor the ``Content-Type`` of a presigned PUT (the bucket itself must
refuse an upload larger than ``max_upload_size`` or of another type), nor add the
``response-content-type``/``response-content-disposition`` overrides of a presigned GET
(servers refuse overrides appended after signing). botocore's presigner can, but is a
large dependency for sixty lines. Tested against a real S3-compatible server
(``tests/test_sigv4.py``, SeaweedFS).

Usage::

    url = presign("PUT", "http://127.0.0.1:9000", "bucket", "prefix/key",
                  credentials, expires=300,
                  headers={"content-length": "1234", "content-type": "image/png"})
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

__all__ = ["Credentials", "presign"]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
MAX_EXPIRES: Final = 7 * 24 * 3600  # SigV4's limit


@dataclass(frozen=True)
class Credentials:
    """What signs a request: keys, region, and an optional session token (STS)."""

    access_key: str
    secret_key: str
    region: str = "us-east-1"
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key={self.access_key!r}, region={self.region!r})"


def _encode(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def presign(
    method: str,
    endpoint: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    *,
    expires: int,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> str:
    """A path-style presigned URL for *method* on ``bucket/key`` at *endpoint*.

    *headers* are signed: the client must send exactly these values (``content-length``,
    ``content-type``), or the server answers 403. *query* parameters are signed too
    (``response-content-type``, ``response-content-disposition``). *expires*: seconds,
    1 to 7 days' worth.
    """
    if not 1 <= expires <= MAX_EXPIRES:
        raise ValueError(f"expires must be between 1 and {MAX_EXPIRES} seconds")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
    when = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    stamp, day = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    scope = f"{day}/{credentials.region}/s3/aws4_request"

    signed = {"host": parts.netloc.lower()}
    for name, value in (headers or {}).items():
        signed[name.lower()] = " ".join(str(value).split())
    names = ";".join(sorted(signed))
    params = dict(query or {})
    params.update(
        {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{credentials.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": names,
        }
    )
    if credentials.session_token:
        params["X-Amz-Security-Token"] = credentials.session_token
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params.items()))
    path = parts.path.rstrip("/") + "/" + _encode(bucket) + "/" + _encode(key, safe="-_.~/")
    canonical = "\n".join(
        [
            method.upper(),
            path,
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
            names,
            "UNSIGNED-PAYLOAD",
        ]
    )
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(("AWS4" + credentials.secret_key).encode(), day)
    for part in (credentials.region, "s3", "aws4_request"):
        signing_key = _hmac(signing_key, part)
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    base = f"{parts.scheme}://{parts.netloc}{path}"
    return f"{base}?{canonical_query}&X-Amz-Signature={signature}"
