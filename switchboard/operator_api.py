"""A client of a running process's operator API (``gateway.dashboard``), over HTTP.

``switchboard calls``, ``replay`` and ``tail`` take ``--url`` to work against
a ``switchboard dev`` process (``make run``), whose bus lives in its memory
and so cannot be read from outside: the process serves what they need on its
own port. :class:`OperatorApi` is that client (``urllib`` in a worker thread:
an administrative path, a handful of requests). :class:`HttpStreams` offers
the read-only part of the ``Bus`` protocol (``range``, ``read``,
``last_id``) on top of it, so the same replay and tail code runs on either.

Failures become :class:`OperatorApiError` with one line that says what to do.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, TextIO
from urllib.parse import urlencode

import trio

from bus.base import Entry, MalformedEntry
from bus.envelope import Envelope
from bus.keys import Keys
from switchboard.ops.tail import TailLine, matches

TIMEOUT_S = 10.0


class OperatorApiError(Exception):
    """The process could not be asked (down, refused, no dashboard): a one-line reason."""


class OperatorApi:
    """GET JSON from ``base_url``'s ``/api/*`` routes, with the dashboard token if any."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urlencode(params)
        request = urllib.request.Request(url)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise OperatorApiError(
                    f"{self.base_url} wants the dashboard token: "
                    "set SWITCHBOARD_DASHBOARD_TOKEN to the server's"
                ) from None
            if exc.code == 404 and path in ("/api/calls", "/api/streams"):
                raise OperatorApiError(
                    f"{self.base_url} serves no operator API: it is a signed gateway without "
                    "SWITCHBOARD_DASHBOARD_TOKEN (set one there), or not a Switchboard process"
                ) from None
            try:
                detail = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError):
                detail = ""
            raise OperatorApiError(f"{url}: HTTP {exc.code} {detail}".rstrip()) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OperatorApiError(
                f"cannot reach {self.base_url} ({reason}): is `switchboard dev` "
                "(`make run`) running there? --url names its address"
            ) from None

    async def get(self, path: str, **params: Any) -> Any:
        """``GET path?params`` as parsed JSON (cancellable: the thread is abandoned)."""
        return await trio.to_thread.run_sync(
            self._get, path, {k: v for k, v in params.items() if v is not None}
        )


class HttpStreams:
    """The read-only bus operations over an :class:`OperatorApi`."""

    def __init__(self, api: OperatorApi) -> None:
        self.api = api

    async def range(
        self, stream: str, start: str = "-", end: str = "+", count: int | None = None
    ) -> list[Entry]:
        data = await self.api.get("/api/range", stream=stream, start=start, end=end, count=count)
        return [Entry(stream, entry_id, fields) for entry_id, fields in data["entries"]]

    async def read(
        self, stream: str, after: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        data = await self.api.get(
            "/api/read", stream=stream, after=after, count=count, block_ms=block_ms
        )
        return [Entry(stream, entry_id, fields) for entry_id, fields in data["entries"]]

    async def last_id(self, stream: str) -> str:
        data = await self.api.get("/api/read", stream=stream, after="$", count=1)
        return str(data["after"])

    async def streams(self) -> list[str]:
        data = await self.api.get("/api/streams")
        return [str(s) for s in data["streams"]]

    async def keys(self) -> Keys:
        """The process's stream names: its namespace and partition count."""
        data = await self.api.get("/api/streams")
        return Keys(namespace=str(data["namespace"]), partitions=int(data["partitions"]))


async def tail_url(
    api: OperatorApi, *, call: str | None = None, kind: str | None = None
) -> AsyncIterator[TailLine]:
    """Entries appended from now on to every stream of the process at ``api``.

    ``/api/tail`` keeps a cursor per stream; each answer hands the cursors
    back, so nothing between two requests is missed.
    """
    after: dict[str, str] = {}
    while True:
        data = await api.get("/api/tail", after=json.dumps(after), block_ms=1000)
        after = {str(k): str(v) for k, v in data["after"].items()}
        for stream, entry_id, fields in data["entries"]:
            try:
                env = Envelope.decode(fields)
            except MalformedEntry:
                continue
            line = TailLine(stream, entry_id, env)
            if matches(line, call=call, kind=kind):
                yield line


async def run_tail_url(
    api: OperatorApi,
    *,
    call: str | None = None,
    kind: str | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """``switchboard tail --url``: print matching entries until interrupted."""
    async for line in tail_url(api, call=call, kind=kind):
        out.write(line.format() + "\n")
        out.flush()
