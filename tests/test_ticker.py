"""The ticker fires deadlines on time, moved ones at their new time, discarded ones never."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from sluice.ticker import Deadline, Ticker

# -- ticker ---------------------------------------------------------------------


def test_ticker_fires_a_deadline_moved_later_or_added_again_earlier_at_its_new_time_never_a_discarded_one():
    ticker = Ticker(0.01)
    fired: dict[str, float] = {}
    done = threading.Event()

    def note(name: str):
        def expire() -> None:
            fired[name] = time.monotonic()
            if name == "later":
                done.set()

        return expire

    now = time.monotonic()
    earlier = ticker.add(Deadline(now + 60, note("earlier")))
    later = ticker.add(Deadline(now + 0.02, note("later")))
    dropped = ticker.add(Deadline(now + 0.02, note("dropped")))
    earlier.at = now + 0.05
    ticker.add(earlier)  # moved earlier: queued again for its new time
    later.at = now + 0.3  # moved later: found moved when its old time comes
    ticker.discard(dropped)
    assert done.wait(5)
    assert fired["earlier"] < fired["later"]
    assert fired["earlier"] < now + 5  # not at its first time, a minute out
    assert fired["later"] >= now + 0.3
    assert "dropped" not in fired
    # Fired deadlines can be watched again (heartbeats re-arm theirs).
    again = threading.Event()
    later.at = time.monotonic() + 0.02
    later.on_expire = again.set
    ticker.add(later)
    assert again.wait(5)


def test_ticker_lets_go_of_a_discarded_deadline_callback_before_its_time():
    ticker = Ticker(0.01)

    class Stream:
        def expire(self) -> None:
            pass

    streams = [Stream() for _ in range(3000)]
    refs = [weakref.ref(stream) for stream in streams]
    deadlines = [ticker.add(Deadline(time.monotonic() + 3600, stream.expire)) for stream in streams]
    for deadline in deadlines:
        ticker.discard(deadline)
    del streams, deadlines
    gc.collect()
    assert all(ref() is None for ref in refs)
