"""CPU per event through the runner, by kind of piece: ``python bench/pieces.py [N]``.

Runs the producer, ``sluice.runner.run``, under gevent (patched, as in the
gunicorn worker) with a provider that never blocks, publishing to a
generation's ``Log`` as the in-memory broker does, then serialises each event
once as the SSE renderer would: the figure is the core's own cost per event
(numbering, deadlines, the log, the JSON), without HTTP or a listener.
Prints microseconds of CPU per event for plain text, text with logprobs,
reasoning, tool-call pieces and refusals, best of five runs each.
"""

from gevent import monkey

monkey.patch_all()

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sluice.broker.log import Log
from sluice.chat import ChatRequest, Message
from sluice.provider import Abort, Finish
from sluice.runner import Limits, run
from sluice.ticker import Ticker


def _kinds() -> dict[str, object]:
    try:
        from sluice.provider import Reasoning, Refusal, Text, ToolCallPart
    except ImportError:  # before typed pieces: text only
        return {"text": "token "}
    return {
        "text": "token ",
        "text+logprobs": Text("token ", {"content": [{"token": "token ", "logprob": -0.1, "bytes": [116]}]}),
        "reasoning": Reasoning("think "),
        "tool_call": ToolCallPart(0, '{"ci'),
        "refusal": Refusal("no "),
    }


class _Provider:
    name = "bench"

    def __init__(self, piece: object, n: int) -> None:
        self.piece, self.n = piece, n

    def stream(self, request, model, abort):
        for _ in range(self.n):
            yield self.piece
        return Finish()


def cost_us(piece: object, n: int) -> float:
    """CPU microseconds per event for ``n`` copies of ``piece``."""
    request = ChatRequest("bench/x", (Message("user", "hi"),))
    best = float("inf")
    for _ in range(5):
        ticker = Ticker()
        log = Log(ticker)
        started = time.process_time()
        run("gen_b", request, [(_Provider(piece, n), "x")], Abort(), log.publish, Limits(max_events=n + 10), ticker)
        for event in log.events:
            _ = event.json
        best = min(best, (time.process_time() - started) / len(log.events) * 1e6)
    return best


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for name, piece in _kinds().items():
        print(f"{name:14s} {cost_us(piece, count):6.2f} µs/event")
