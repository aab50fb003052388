"""CPU seconds and RSS of a process and all its descendants, read from ``/proc``.

A gunicorn server is a master and its workers, so a server's cost is its whole
tree. CPU is ``utime + stime + cutime + cstime`` (the last two count children
that died and were reaped, e.g. a worker that was restarted), RSS the sum of
every live process's resident set.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

__all__ = ["TreeSample", "sample_tree"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class TreeSample:
    """One look at a process tree."""

    rss_kb: int = 0
    cpu_s: float = 0.0
    nprocs: int = 0

    def as_dict(self) -> dict:
        """The sample as a JSON-ready dict."""
        return asdict(self)


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, cpu ticks, rss kB)`` of ``pid``, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 22:
        return None
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return int(fields[1]), ticks, int(fields[21]) * _PAGE_KB


def _children(pid: int) -> list[int] | None:
    """Direct children of ``pid`` via ``/proc/<pid>/task/*/children``; None if unsupported."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(k) for k in f.read().split())
        except FileNotFoundError:
            return None  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return kids


def _children_by_scan() -> dict[int, list[int]]:
    """Every process's children, from one pass over ``/proc`` (the slow fallback)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := _stat(int(name))) is not None:
            kids.setdefault(info[0], []).append(int(name))
    return kids


def sample_tree(root: int) -> TreeSample:
    """RSS, CPU seconds and process count of ``root`` and its descendants (zeros if ``root`` <= 0)."""
    if root <= 0:
        return TreeSample()
    scanned: dict[int, list[int]] | None = None
    rss = ticks = count = 0
    queue = [root]
    while queue and count < 10_000:  # bounded: a fork bomb must not hang the sampler
        pid = queue.pop()
        info = _stat(pid)
        if info is None:
            continue
        count += 1
        ticks += info[1]
        rss += info[2]
        kids = _children(pid)
        if kids is None:
            if scanned is None:
                scanned = _children_by_scan()
            kids = scanned.get(pid, [])
        queue.extend(kids)
    return TreeSample(rss_kb=rss, cpu_s=ticks / _TICKS_PER_S, nprocs=count)
