"""The peer benchmark's figures as one PNG (needs the `bench` extra: matplotlib).

    python benchmarks/peers/plot.py RESULTS.json [OUT.png]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

THOUSANDS = FuncFormatter(lambda value, _: f"{value:,.0f}")

COLOURS = {
    "floor": "#9e9e9e",
    "acp-sdk": "#d95f02",
    "runengine native (SQLite NORMAL)": "#7570b3",
    "runengine native (SQLite)": "#1b9e77",
    "runengine native (memory)": "#e7298a",
    "runengine /acp": "#66a61e",
    "runengine SQLite": "#1b9e77",
    "eventsourcing": "#d95f02",
    "raw sqlite3": "#9e9e9e",
}


def colour(side: str) -> str:
    for prefix, value in COLOURS.items():
        if side.startswith(prefix):
            return value
    return "#7570b3"


def _sides(rows: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row["side"] not in seen:
            seen.append(row["side"])
    return seen


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value >= 1_000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def plot(results: dict[str, Any], out: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(20, 10.5))
    machine = results["machine"]
    fig.suptitle(
        f"runengine beside its peers — {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"SQLite {machine['sqlite']}; load average {machine['load_at_start'][0]:.1f} → {machine['load_at_end'][0]:.1f}",
        fontsize=11,
    )

    # 1. streamed run: seconds to the last event against N, log-log; did-not-finish drawn at the cap
    ax = axes[0][0]
    stream = results["stream"]
    for side in _sides(stream):
        xs, ys, dnf_x, dnf_y = [], [], [], []
        for n in sorted({r["n"] for r in stream if r["side"] == side}):
            rows = [r for r in stream if r["side"] == side and r["n"] == n]
            if all(r["finished"] for r in rows):
                xs.append(n)
                ys.append(statistics.median(r["seconds"] for r in rows))
            else:
                dnf_x.append(n)
                dnf_y.append(rows[0]["cap"])
        ax.plot(xs, ys, "o-", color=colour(side), label=side)
        if dnf_x:
            ax.plot(dnf_x, dnf_y, "^", color=colour(side), markersize=12)
            for x, y in zip(dnf_x, dnf_y):
                ax.annotate(f"did not finish\nin {y:.0f} s", (x, y), textcoords="offset points", xytext=(-70, -12),
                            fontsize=8, color=colour(side))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parts in one streamed run (N)")
    ax.set_ylabel("seconds to the last event (median; lower is better)")
    ax.set_title("One streamed run of N parts over loopback SSE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    # 2. sync runs/s as runs accumulate (batches, then the soak)
    ax = axes[0][1]
    sync = results["sync"]
    for side in _sides(sync):
        rows = [r for r in sync if r["side"] == side]
        ax.plot([r["total_runs"] for r in rows], [r["runs_per_s"] for r in rows], "o-", color=colour(side), label=side)
    soak = results.get("soak", [])
    for side in _sides(soak):
        rows = [r for r in soak if r["side"] == side]
        ax.plot([r["total_runs"] for r in rows], [r["runs_per_s"] for r in rows], "-", color=colour(side), alpha=0.6,
                linewidth=0.8, label=f"{side}: soak")
    ax.axhline(300, color="black", linestyle=":", linewidth=1, label="target 300 runs/s")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel("sync runs so far on that server (log scale)")
    ax.set_ylabel("runs/s in each batch (higher is better)")
    ax.set_title("Sequential sync runs of a trivial agent: does throughput hold?")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    # 3. concurrent sync runs
    ax = axes[0][2]
    concurrent = results.get("concurrent", [])
    sides = _sides(concurrent)
    values = []
    for side in sides:
        rows = [r for r in concurrent if r["side"] == side]
        values.append(statistics.median(r["runs_per_s"] for r in rows) if all(r["finished"] for r in rows) else 0)
    bars = ax.barh(range(len(sides)), values, color=[colour(s) for s in sides])
    ax.bar_label(bars, labels=[_short(v) if v else "did not finish" for v in values], fontsize=8, padding=3)
    ax.set_yticks(range(len(sides)))
    ax.set_yticklabels(sides, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(300, color="black", linestyle=":", linewidth=1, label="target 300 runs/s")
    ax.legend(fontsize=8, loc="lower right")
    clients = concurrent[0]["clients"] if concurrent else 0
    ax.set_title(f"Sync runs from {clients} concurrent clients: runs/s (higher is better)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)

    # 4-6. event store: append, read and rebuild events/s, grouped by per-save size
    store = results["store"]
    for ax, metric, title in (
        (axes[1][0], "append_per_s", "Appending a 10,000-token stream: events/s (higher is better)"),
        (axes[1][1], "read_per_s", "Reading it back as decoded events: events/s (higher is better)"),
        (axes[1][2], "rebuild_per_s", "Rebuilding the state from the events: events/s (higher is better)"),
    ):
        sides = [s for s in _sides(store) if any(metric in x for r in store if r["side"] == s for x in r["runs"])]
        groups = sorted({r["per_save"] for r in store})
        width = 0.8 / max(1, len(sides))
        for i, side in enumerate(sides):
            values = []
            for per_save in groups:
                rows = [r for r in store if r["side"] == side and r["per_save"] == per_save]
                values.append(statistics.median(x[metric] for x in rows[0]["runs"]) if rows else 0.0)
            bars = ax.bar([g + i * width for g in range(len(groups))], values, width, color=colour(side), label=side)
            ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=8)
        ax.set_xticks([g + width * (len(sides) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels([f"{g} per save" for g in groups])
        if metric == "append_per_s":
            ax.set_yscale("log")  # 1 per save and 100 per save differ by orders of magnitude
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.set_title(title.replace("10,000", f"{store[0]['n']:,}") if store else title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        if sides:
            ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    source = Path(sys.argv[1])
    plot(json.loads(source.read_text()), Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".png"))
