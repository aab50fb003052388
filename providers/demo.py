"""The ``demo`` provider: built-in, deterministic models that need nothing installed.

``demo/echo`` answers a chat with its last user message followed by a fixed footer::

    {message}\\n\\n```text\\necho · {chars} chars · {words} words · ✓ 🙂\\n```

where ``chars`` counts the message's code points and ``words`` its runs of
non-space characters. It is streamed as pieces, each a run of non-space
characters with the white space after it (the message's pieces first, then the
footer's 13), with ``SLUICE_DEMO_DELAY_MS`` between two pieces. So a test can
predict every byte, and the output still has what real models send: newlines,
a code fence and multi-byte characters.

``demo/think`` is a reasoning model: it first streams ``reasoning(message)``
as ``reasoning`` pieces (split the same way), then the same answer as
``demo/echo``.

Both, as a real model would:
- usage: ``prompt_tokens`` is the number of words in all messages' text,
  ``completion_tokens`` the number of pieces sent (reasoning included);
- ``max_tokens`` (or ``max_completion_tokens``) caps the pieces sent, reasoning
  included, and ends with finish reason ``length``;
- ``stop`` ends the answer before the first stop string, finish reason ``stop``
  (the ``Finish`` names the stop string);
- a conversation that ends with an assistant turn asks to *continue* it: when
  that turn's text begins the answer, the rest of the answer is streamed (no
  reasoning), so a cut-off answer can be continued into one whole;
- the sampling fields (``temperature``, ``top_p``, ``seed``, the penalties,
  ``n`` 1) are accepted: a deterministic model gives the same answer at any
  setting. What it cannot honour (tools, a JSON response format, images,
  logprobs, ``logit_bias``, ``extra``; ``reasoning_effort`` on ``echo``) is
  refused with ``400``.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator

from sluice.chat import ChatRequest
from sluice.errors import InvalidRequest, ModelNotFound
from sluice.provider import Abort, Finish, Piece, Reasoning

__all__ = ["DemoProvider", "answer", "iter_pieces", "pieces", "reasoning"]

_PIECE = re.compile(r"\S+\s*|\s+")
_WORD = re.compile(r"\S+")
_MODELS = ("echo", "think")
# Fields a deterministic echo cannot honour: never dropped, refused.
_REFUSED_OPTIONS = ("logprobs", "top_logprobs", "logit_bias")


def answer(message: str) -> str:
    """The whole reply of ``demo/echo`` (and ``demo/think``) to ``message``."""
    words = len(_WORD.findall(message))
    return f"{message}\n\n```text\necho · {len(message)} chars · {words} words · ✓ 🙂\n```"


def reasoning(message: str) -> str:
    """The reasoning ``demo/think`` streams before its answer to ``message``."""
    words = len(_WORD.findall(message))
    return (
        f"The user wrote {words} words in {len(message)} characters. "
        "I will repeat the message exactly, then add a footer that counts them."
    )


def _split(text: str) -> Iterator[str]:
    # A match per piece from a position, not ``finditer``: its scanner keeps
    # about 700 bytes of matching state alive for as long as the stream runs.
    position, end = 0, len(text)
    while position < end:
        match = _PIECE.match(text, position)
        assert match is not None  # the pattern matches any non-empty text
        position = match.end()
        yield match.group()


def iter_pieces(message: str) -> Iterator[str]:
    """The reply of ``demo/echo`` to ``message``, piece by piece as it is streamed.

    Lazily: a stream holds one piece at a time, not a list of the whole answer.
    """
    yield from _split(message)
    yield from _split(answer(message)[len(message) :])


def pieces(message: str) -> list[str]:
    """The reply of ``demo/echo`` to ``message``, split as it is streamed."""
    return list(iter_pieces(message))


def _stopped(pieces: Iterable[str], stops: list[str]) -> tuple[list[str], str | None]:
    """``pieces`` cut before the first of ``stops`` (which may span pieces), and the stop found (None)."""
    pieces = list(pieces)
    text = "".join(pieces)
    found = sorted((at, i, stop) for i, stop in enumerate(stops) if stop and (at := text.find(stop)) >= 0)
    if not found:
        return pieces, None
    room, _, stop = found[0]
    kept = []
    for piece in pieces:
        if room <= 0:
            break
        kept.append(piece[:room])
        room -= len(piece)
    return kept, stop


class DemoProvider:
    """The ``demo`` provider: ``echo`` and ``think``."""

    name = "demo"

    def __init__(self, delay_ms: float = 30.0) -> None:
        self.delay_s = delay_ms / 1000.0

    def models(self) -> Iterable[str]:
        """``["echo", "think"]``."""
        return list(_MODELS)

    def check(self, request: ChatRequest, model: str) -> None:
        """Refuse what a deterministic echo cannot honour (see the module docstring)."""
        if model not in _MODELS:
            raise ModelNotFound(f"Unknown model 'demo/{model}': the demo provider has 'echo' and 'think'.")
        where = f"demo/{model}"
        if request.tools and request.tool_choice != "none":
            raise InvalidRequest(f"tools: {where} cannot call tools.", param="tools")
        kind = (request.response_format or {}).get("type", "text")
        if kind != "text":
            raise InvalidRequest(f"response_format {kind}: {where} only answers text.", param="response_format")
        for name in _REFUSED_OPTIONS:
            if request.options.get(name):
                raise InvalidRequest(f"{name}: {where} has no token probabilities.", param=name)
        if request.options.get("n", 1) != 1:
            raise InvalidRequest(f"n: {where} gives one answer.", param="n")
        if "reasoning_effort" in request.options and model != "think":
            raise InvalidRequest(
                f"reasoning_effort: {where} does not reason; try demo/think.", param="reasoning_effort"
            )
        if request.extra:
            raise InvalidRequest(f"extra: {where} has no server-specific settings.", param="extra")
        for index, message in enumerate(request.messages):
            if message.images:
                raise InvalidRequest(f"image_url: {where} cannot see images.", param=f"messages[{index}].content")

    def stream(self, request: ChatRequest, model: str, abort: Abort) -> Generator[Piece, None, Finish]:
        """Yield the reasoning (``think``), then the answer's pieces, pausing between them."""
        self.check(request, model)
        prompt_tokens = sum(len(_WORD.findall(m.text)) for m in request.messages)
        message = request.last_user_message
        thoughts: Iterable[str] = _split(reasoning(message)) if model == "think" else ()
        replies: Iterable[str] = iter_pieces(message)
        last = request.messages[-1]
        if last.role == "assistant":  # continue that answer
            thoughts = ()
            full, begun = answer(message), last.text
            replies = _split(full[len(begun) :]) if full.startswith(begun) else ()
        stop = request.options.get("stop")
        stopped_by = None
        if stop:
            replies, stopped_by = _stopped(replies, [stop] if isinstance(stop, str) else stop)
        limit = request.max_tokens
        sent = 0
        for kind, text in _tagged(thoughts, replies):
            if limit is not None and sent >= limit:
                return Finish("length", {"prompt_tokens": prompt_tokens, "completion_tokens": sent})
            if sent and self.delay_s and abort.pause(self.delay_s):
                break
            yield Reasoning(text) if kind else text
            sent += 1
        return Finish("stop", {"prompt_tokens": prompt_tokens, "completion_tokens": sent}, stop_sequence=stopped_by)


def _tagged(thoughts: Iterable[str], replies: Iterable[str]) -> Iterator[tuple[bool, str]]:
    for text in thoughts:
        yield True, text
    for text in replies:
        yield False, text
