"""Turn the bench's rows (one loadgen JSON object each, plus ``server`` and ``work``) into a table and a chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["COLUMNS", "format_table", "plot_lateness"]

COLUMNS = [
    "server",
    "work",
    "C",
    "done/C",
    "peak open",
    "errors",
    "TTFE p50/p99 ms",
    "late p50/p99 ms",
    "events/s",
    "srv CPU s",
    "CPU s/100k ev",
    "srv RSS MB base→peak",
    "KB/stream",
    "client CPU s",
    "notes",
]


def _ms(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or x < 0 else f"{x:.{digits}f}"


def _fresh_rss(rows: Sequence[dict]) -> dict[str, int]:
    """Each server's lowest RSS before any of its rows: its fresh start.

    Allocators keep memory between rows of one server, so a row's own "before"
    would undercount what its streams cost.
    """
    fresh: dict[str, int] = {}
    for r in rows:
        base = r.get("server_before", {}).get("rss_kb")
        if base:
            fresh[r["server"]] = min(base, fresh.get(r["server"], base))
    return fresh


def _notes(row: dict, direct: dict | None) -> str:
    """The workload's own measurements, for the last column."""
    notes = []
    if row["work"] == "W1" and row["completed"] < 0.5 * row["c"]:
        notes.append("fewer than half completed: larger C skipped")
    if row["work"] == "W3" and row["server"] != "upstream-direct" and direct and direct.get("events"):
        notes.append(
            f"vs upstream-direct: +TTFE p50 {row['ttfe_p50_ms'] - direct['ttfe_p50_ms']:.1f} ms, "
            f"+late p50/p99 {row['late_p50_ms'] - direct['late_p50_ms']:.2f}/"
            f"{row['late_p99_ms'] - direct['late_p99_ms']:.2f} ms"
        )
    if d := row.get("disconnect"):
        r, b = d["random"], d["bulk"]
        notes.append(
            f"client close → upstream close, {r['closed']} at random moments: p50/p99/max "
            f"{_ms(r['p50_ms'])}/{_ms(r['p99_ms'])}/{_ms(r['max_ms'])} ms (seen {r['seen']}/{r['closed']}); "
            f"the other {b['closed']} at once: {_ms(b['p50_ms'])}/{_ms(b['p99_ms'])}/{_ms(b['max_ms'])} ms "
            f"(seen {b['seen']}/{b['closed']})"
        )
    if x := row.get("crossworker"):
        notes.append(
            f"a listener on another worker, {x['probes']} generations followed live: each event "
            f"{_ms(x['p50_ms'])}/{_ms(x['p99_ms'])}/{_ms(x['max_ms'])} ms (p50/p99/max) after the owner's client "
            f"({x['delivered']} events, {x['missing']} missing, {x['complete_followers']}/{x['probes']} followers whole"
            + (f", errors {x['probe_errors']}" if x["probe_errors"] else "")
            + ")"
        )
    if rp := row.get("replay"):
        parts = []
        for name, one in (("alone", rp["alone"]), ("under this load", rp["under_load"])):
            if "error" in one:
                parts.append(f"{name}: {one['error']}")
            else:
                parts.append(
                    f"{name} {one['events']}/{one['expect']} ev in {one['replay_s'] * 1000:.0f} ms = "
                    f"{one['events_per_s']:.0f} ev/s"
                )
        text = "replay of a finished generation: " + "; ".join(parts)
        if w := row.get("window"):
            text += (
                f"; background late p50/p99/max during the replay {_ms(w['late_p50_ms'], 2)}/"
                f"{_ms(w['late_p99_ms'], 2)}/{_ms(w['late_max_ms'], 2)} ms ({w['gaps']} gaps)"
            )
        notes.append(text)
    return "; ".join(notes) or "-"


def format_table(rows: Sequence[dict]) -> str:
    """One markdown table, a row per loadgen run."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    fresh = _fresh_rss(rows)
    direct = next((r for r in rows if r.get("server") == "upstream-direct"), None)
    for r in rows:
        if "events" not in r:
            cells = [r.get("server", "?"), r.get("work", "?"), str(r.get("c", "?")), r.get("error", "failed")]
            lines.append("| " + " | ".join(cells + [""] * (len(COLUMNS) - len(cells))) + " |")
            continue
        events = r["events"] or 0
        measured = r["server_before"]["nprocs"] > 0
        base, peak = r["server_before"]["rss_kb"], r["server_peak_rss_kb"]
        kb = "-"
        if r["work"] == "W1" and r["peak_open"] and measured:
            kb = f"{(peak - fresh[r['server']]) / r['peak_open']:.0f}"
        cells = [
            r["server"],
            r["work"],
            str(r["c"]),
            f"{r['completed']}/{r['c']}",
            str(r["peak_open"]),
            ", ".join(f"{k}:{v}" for k, v in sorted(r["errors"].items())) or "-",
            f"{_ms(r['ttfe_p50_ms'])} / {_ms(r['ttfe_p99_ms'])}",
            f"{_ms(r['late_p50_ms'], 2)} / {_ms(r['late_p99_ms'], 2)}",
            f"{r['events_per_s']:.0f}",
            f"{r['server_cpu_s']:.2f}" if measured else "-",
            f"{r['server_cpu_s'] / events * 1e5:.2f}" if measured and events else "-",
            f"{base / 1024:.0f}→{peak / 1024:.0f}" if measured else "-",
            kb,
            f"{r['client_cpu_s']:.2f}",
            _notes(r, direct),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_lateness(rows: Sequence[dict], path: Path) -> Path | None:
    """p50 and p99 lateness against concurrent streams (the W1 rows), one line per server.

    :return: ``path``, or None when there are no W1 rows or matplotlib is missing.
    """
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        if r.get("work") == "W1" and r.get("gaps"):
            series.setdefault(r["server"], []).append((r["c"], r["late_p50_ms"], r["late_p99_ms"]))
            shape = f"{r.get('n', '?')} events at {r['interval_ms']:.0f} ms per stream"
    if not series:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    ticks = sorted({p[0] for points in series.values() for p in points})
    for name, points in sorted(series.items()):
        points.sort()
        cs = [p[0] for p in points]
        for ax, index in zip(axes, (1, 2), strict=True):
            ax.plot(cs, [p[index] for p in points], marker="o", label=name)
    for ax, title in zip(axes, ("p50 lateness", "p99 lateness"), strict=True):
        ax.set_title(f"W1 {title}")
        ax.set_xlabel(f"concurrent streams ({shape})")
        ax.set_ylabel("ms late (gap between events - interval)")
        ax.set_xticks(ticks)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
