"""``python -m chatkit_adapters.stores upgrade URL``: apply the SQLStore schema migrations.

``python -m chatkit_adapters.stores version URL`` prints the database's schema version and
this release's. ``URL`` defaults to ``DATABASE_URL``. Exit status 0 on success.
"""

from __future__ import annotations

import argparse
import asyncio
import os


async def _run(command: str, url: str) -> str:
    from .sql import SCHEMA_VERSION, SQLStore

    store: SQLStore = SQLStore(url, migrate=False)
    try:
        if command == "upgrade":
            before, after = await store.upgrade()
            if before == after:
                return f"{store!r}: schema version {after}, up to date"
            return f"{store!r}: schema upgraded from version {before} to {after}"
        version = await store.schema_version()
        return f"{store!r}: schema version {version} (this release uses {SCHEMA_VERSION})"
    finally:
        await store.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chatkit_adapters.stores", description=__doc__)
    parser.add_argument("command", choices=["upgrade", "version"])
    parser.add_argument("url", nargs="?", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("give a database URL (or set DATABASE_URL)")
    print(asyncio.run(_run(args.command, args.url)))


if __name__ == "__main__":
    main()
