"""One reply of the agent, as the caller received it."""

from __future__ import annotations

from dataclasses import dataclass

from relay import Text


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply of the agent: the ``text`` frames up to and including ``last: true``."""

    frames: tuple[Text, ...]

    @property
    def tokens(self) -> list[str]:
        return [frame.token for frame in self.frames]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def complete(self) -> bool:
        return bool(self.frames) and self.frames[-1].last
