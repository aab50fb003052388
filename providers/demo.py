"""``demo/echo``: a built-in, deterministic model that needs nothing installed.

The answer to a chat is its last user message followed by a fixed footer::

    {message}\\n\\n```text\\necho · {chars} chars · {words} words · ✓ 🙂\\n```

where ``chars`` counts the message's code points and ``words`` its runs of
non-space characters. It is streamed as pieces, each a run of non-space
characters with the white space after it (the message's pieces first, then the
footer's 13), with ``SLUICE_DEMO_DELAY_MS`` between two pieces. So a test can
predict every byte, and the output still has what real models send: newlines,
a code fence and multi-byte characters. Usage: ``prompt_tokens`` is the number
of words in all messages, ``completion_tokens`` the number of pieces sent;
``options.max_tokens`` stops it early with finish reason ``length``.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator

from sluice.chat import ChatRequest
from sluice.errors import ModelNotFound

from . import Abort, Finish

__all__ = ["DemoProvider", "answer", "iter_pieces", "pieces"]

_PIECE = re.compile(r"\S+\s*|\s+")
_WORD = re.compile(r"\S+")


def answer(message: str) -> str:
    """The whole reply of ``demo/echo`` to ``message``."""
    words = len(_WORD.findall(message))
    return f"{message}\n\n```text\necho · {len(message)} chars · {words} words · ✓ 🙂\n```"


def iter_pieces(message: str) -> Iterator[str]:
    """The reply of ``demo/echo`` to ``message``, piece by piece as it is streamed.

    Lazily: a stream holds one piece at a time, not a list of the whole answer.
    """
    footer = answer(message)[len(message) :]
    for text in (message, footer):
        # A match per piece from a position, not ``finditer``: its scanner keeps
        # about 700 bytes of matching state alive for as long as the stream runs.
        position, end = 0, len(text)
        while position < end:
            match = _PIECE.match(text, position)
            assert match is not None  # the pattern matches any non-empty text
            position = match.end()
            yield match.group()


def pieces(message: str) -> list[str]:
    """The reply of ``demo/echo`` to ``message``, split as it is streamed."""
    return list(iter_pieces(message))


class DemoProvider:
    """The ``demo`` provider; its only model is ``echo``."""

    name = "demo"

    def __init__(self, delay_ms: float = 30.0) -> None:
        self.delay_s = delay_ms / 1000.0

    def models(self) -> Iterable[str]:
        """``["echo"]``."""
        return ["echo"]

    def stream(
        self, request: ChatRequest, model: str, abort: Abort
    ) -> Generator[str, None, Finish]:
        """Yield the pieces of ``answer(last user message)``, pausing between them."""
        if model != "echo":
            raise ModelNotFound(f"Unknown model 'demo/{model}': the demo provider has 'echo'.")
        prompt_tokens = sum(len(_WORD.findall(m.content)) for m in request.messages)
        limit = request.max_tokens
        sent = 0
        for piece in iter_pieces(request.last_user_message):
            if limit is not None and sent >= limit:
                return Finish("length", prompt_tokens, sent)
            if sent and self.delay_s and abort.pause(self.delay_s):
                break
            yield piece
            sent += 1
        return Finish("stop", prompt_tokens, sent)
