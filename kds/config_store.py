"""Parsers of the store options (kds.config): which backend, PostgreSQL's URL and schema."""

from __future__ import annotations

import re

from kds.errors import shown

__all__ = ["postgres_url", "schema_name", "store_backend"]


def store_backend(value: object) -> str:
    text = str(value).strip().lower()
    if text not in {"sqlite", "postgres"}:
        raise ValueError("must be sqlite or postgres")
    return text


def postgres_url(value: object) -> str:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    text = str(value).strip()
    if not text:
        return ""
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must look like postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full")
    try:
        conninfo_to_dict(text)
    except ProgrammingError:
        # psycopg's message may quote the URL, password included: say what, never echo it
        raise ValueError("is not a valid PostgreSQL URL (libpq could not parse it)") from None
    return text


def schema_name(value: object) -> str:
    text = str(value).strip()
    if text and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise ValueError(
            f"{shown(value)} is not a schema name: lower-case letters, digits and _, "
            "starting with a letter or _, at most 63"
        )
    return text
