"""What an upstream said in an error answer (its type, message, request id, Retry-After), clipped and with
every configured key removed: the only upstream text a failure sentence may quote."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping

_MAX_UPSTREAM_TEXT = 300
_MIN_CUT_FRAGMENT = 4
"""The shortest start of a key removed at a cut: shorter ones match ordinary words too often to mean a key."""
_RETRY_AFTER_IN_TEXT = re.compile(r"retry after (\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret in `text` with `***` (an upstream may echo a key back in its message)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def upstream_words(text: str, secrets: tuple[str, ...]) -> str:
    """An upstream's own message as a sentence may quote it: every secret removed first, whitespace
    folded, clipped to `_MAX_UPSTREAM_TEXT`, and the start of a secret left at the cut removed too (a
    key that straddles the cut is no longer whole, so no replacement could find it afterwards)."""
    text = " ".join(redact(text, secrets).split())
    if len(text) <= _MAX_UPSTREAM_TEXT:
        return text
    return _drop_cut_secret(text[: _MAX_UPSTREAM_TEXT - 1], secrets) + "…"


def _drop_cut_secret(text: str, secrets: tuple[str, ...]) -> str:
    """`text` without a trailing start of any secret of `_MIN_CUT_FRAGMENT` characters or more."""
    for secret in secrets:
        for length in range(min(len(secret) - 1, len(text)), _MIN_CUT_FRAGMENT - 1, -1):
            if text.endswith(secret[:length]):
                text = text[:-length]
                break
    return text


def upstream_reason(body: bytes) -> tuple[str | None, str | None]:
    """The upstream's own (type, message) from an error body, or (None, None) if it gave none.

    Both vendors use `{"error": {"message", "type"}}`; FastAPI validation errors come as
    `{"detail": "..."}` or `{"detail": [{"loc", "msg", "type"}, ...]}`. HTML pages and other
    non-JSON bodies yield nothing: we never echo a raw body.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):
        etype, message = error.get("type"), error.get("message")
        return (etype if isinstance(etype, str) else None, message if isinstance(message, str) else None)
    if isinstance(error, str):
        return None, error
    detail = data.get("detail")
    if isinstance(detail, str):
        return None, detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail[:3]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        return "validation_error", "; ".join(parts) or None
    message = data.get("message")
    return None, message if isinstance(message, str) else None


def parse_retry_after(headers: Mapping[str, str], message: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or Fortytwo's "Retry after 10s" text."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - (time.time() if now is None else now))
    if message:
        match = _RETRY_AFTER_IN_TEXT.search(message)
        if match:
            return float(match.group(1))
    return None


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
"""What a request id looks like; anything else an upstream puts there is not echoed."""


def upstream_request_id(headers: Mapping[str, str], body: bytes) -> str | None:
    """The upstream's id of a request: its `x-request-id` header (as openai-python keeps it), or the
    `id` of its JSON error body; None when neither is there or looks like an id."""
    found = headers.get("x-request-id") or headers.get("request-id")
    if not found:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            found = data.get("id") or (error.get("id") if isinstance(error, dict) else None)
    return found if isinstance(found, str) and _REQUEST_ID.match(found) else None
