"""The HTTP vocabulary of the gateway's front: a parsed request, a response."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request: header names are lower case, the body is complete."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string without ``?`` (empty when there is none)."""
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def wants_websocket(self) -> bool:
        upgrade = self.header("upgrade") or ""
        return self.method == "GET" and upgrade.strip().lower() == "websocket"

    def form(self) -> dict[str, str]:
        """The ``application/x-www-form-urlencoded`` body; ``{}`` for other types.

        A repeated name keeps its last value here; ``form_pairs`` has them all.
        """
        return dict(self.form_pairs())

    def form_pairs(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` of the form body in order, repeated names included."""
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return []
        text = self.body.decode("utf-8", errors="replace")
        return parse_qsl(text, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers; ``content_type`` None sends no Content-Type."""

    status: int
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text_response(status: int, text: str = "") -> Response:
    return Response(status, text.encode())


def xml_response(xml: str, status: int = 200) -> Response:
    return Response(status, xml.encode(), content_type="application/xml")
