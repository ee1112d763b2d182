"""The results as markdown tables and a PNG plot of throughput against model size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmarks.candidates import BOTO3, FILE, MEMORY, MINIO, Candidate
from benchmarks.measure import MiB, size_label
from benchmarks.requestcount import RequestCount
from benchmarks.scenarios import PHASES, CallRate, FanoutSummary, RoundSummary
from benchmarks.targets import Rates, Verdict
from benchmarks.throughput import Summary

# One colour family per SDK, so each adapter sits next to the raw calls it is held to.
COLOURS = {
    BOTO3: ["#08519c", "#3182bd", "#6baed6", "#9ecae1"],
    MINIO: ["#a63603", "#e6550d", "#fd8d3c"],
    FILE: ["#006d2c", "#74c476"],
    MEMORY: ["#756bb1"],
}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_tables(summaries: list[Summary], candidates: list[Candidate]) -> str:
    rates = Rates(summaries, candidates)
    by_key = {(s.candidate, s.op, s.size): s for s in summaries}
    out = []
    for op in ("put", "get"):
        rows = []
        for c in candidates:
            row = [c.name]
            for size in rates.sizes:
                s = by_key.get((c.name, op, size))
                base = rates.baseline(c, op, size)
                if s is None:
                    row.append("")
                    continue
                ratio = f" ({s.mib_per_s / base[1]:.2f}x)" if base else ""
                row.append(f"{s.mib_per_s:.0f}{ratio} ±{s.spread * 50:.0f}%")
            rows.append(row)
        out.append(
            f"**{op}** — MiB/s, median; (ratio to the best raw call of the same SDK; local stores: to plain "
            "files); ±half the max-min spread of the repeats\n"
        )
        out.append(_table(["candidate"] + [size_label(s) for s in rates.sizes], rows))
        out.append("")
    rows = []
    for c in candidates:
        row = [c.name]
        for op in ("put", "get"):
            for size in rates.sizes:
                s = by_key.get((c.name, op, size))
                row.append("" if s is None or s.peak_growth is None else f"{s.peak_growth / MiB:.0f}")
        rows.append(row)
    header = ["candidate"] + [f"{op} {size_label(s)}" for op in ("put", "get") for s in rates.sizes]
    out.append(
        "**peak RSS growth during the call** — MiB, highest over the repeats. A get holds the model it returns; "
        "a sample of fast calls spans several of them (MemoryModelStorage keeps every small model it was given).\n"
    )
    out.append(_table(header, rows))
    return "\n".join(out)


def cpu_table(summaries: list[Summary], candidates: list[Candidate]) -> str:
    by_key = {(s.candidate, s.op, s.size): s for s in summaries}
    sizes = sorted({s.size for s in summaries})
    rows = []
    for c in candidates:
        row = [c.name]
        for op in ("put", "get"):
            for size in sizes:
                s = by_key.get((c.name, op, size))
                if s is None:
                    row.append("")
                elif s.server_cpu_per_gib is None:
                    row.append(f"{s.client_cpu_per_gib:.1f}")
                else:
                    total = s.client_cpu_per_gib + s.server_cpu_per_gib
                    row.append(f"{s.client_cpu_per_gib:.1f} + {s.server_cpu_per_gib:.1f} = {total:.1f}")
        rows.append(row)
    header = ["candidate"] + [f"{op} {size_label(s)}" for op in ("put", "get") for s in sizes]
    return (
        "**CPU seconds per GiB moved** — client + server (the server's only when it runs here), median. "
        "On a CPU-bound machine this is what throughput is made of, and other load barely moves it.\n\n"
        + _table(header, rows)
    )


def small_table(small: dict, candidates: list[Candidate]) -> str:
    rows = []
    for c in candidates:
        put, get = small.get((c.name, "put")), small.get((c.name, "get"))
        if not put or not get:
            continue
        cycle = 1 / (1 / put[0] + 1 / get[0])
        rows.append([c.name, f"{put[0]:.0f} ±{put[1] * 50:.0f}%", f"{get[0]:.0f} ±{get[1] * 50:.0f}%", f"{cycle:.0f}"])
    return _table(["candidate", "put with metadata /s", "get /s", "put+get pairs /s"], rows)


def requests_table(counts: list[RequestCount]) -> str:
    rows = []
    for r in counts:
        expected = "" if r.expected is None else f"<= {r.expected} " + ("ok" if r.requests <= r.expected else "OVER")
        rows.append([r.store, r.operation, str(r.requests), expected, r.breakdown])
    return _table(["store", "operation", "requests", "expected", "by S3 operation"], rows)


def streams_table(streams: dict[str, dict], size: int) -> str:
    rows = []
    for name, result in streams.items():
        for phase in ("write", "read"):
            p = result[phase]
            rows.append([name, phase, f"{size / MiB / p['seconds']:.0f}", f"{p['peak_growth'] / MiB:.0f}"])
    return _table(["store", f"{size_label(size)} phase", "MiB/s", "peak RSS growth, MiB"], rows)


def calls_table(rates: list[CallRate], fedn: str | None) -> str:
    """Each store's MiB/s per size and direction, and its ratio to FEDn's TempModelStorage."""
    by = {(r.store, r.op, r.size): r for r in rates}
    sizes = sorted({r.size for r in rates})
    rows = []
    for store in dict.fromkeys(r.store for r in rates):
        for op in ("put", "get"):
            row = [store, "put via get_ptr" if op == "put" else "get"]
            for size in sizes:
                r, base = by.get((store, op, size)), by.get((fedn, op, size))
                if r is None:
                    row.append("")
                    continue
                ratio = f" ({r.mib_per_s / base.mib_per_s:.2f}x)" if base else ""
                row.append(f"{r.mib_per_s:.0f}{ratio} ±{r.spread * 50:.0f}%, {r.client_cpu_per_gib:.2f} s/GiB")
            rows.append(row)
    return _table(["store", "call"] + [size_label(s) for s in sizes], rows)


def _mib(n: int) -> str:
    return f"{n / MiB:.0f}"


def round_table(summaries: list[RoundSummary]) -> str:
    rows = []
    for r in summaries:
        cpu = f"{r.client_cpu:.1f}" + ("" if r.server_cpu is None else f" + {r.server_cpu:.1f}")
        rows.append(
            [r.store]
            + [f"{r.phase_seconds[p]:.2f}" for p in PHASES]
            + [f"{r.seconds:.2f} ±{r.spread * 50:.0f}%", cpu, str(r.requests), _mib(r.bytes_up), _mib(r.bytes_down)]
            + [str(r.model_gets)]
        )
    header = ["store"] + [f"{p} s" for p in PHASES]
    header += ["round s", "CPU s (client + server)", "requests", "MiB up", "MiB down", "model GETs"]
    return _table(header, rows)


def fanout_table(summaries: list[FanoutSummary]) -> str:
    rows = []
    for f in summaries:
        cpu = f"{f.client_cpu:.2f}" + ("" if f.server_cpu is None else f" + {f.server_cpu:.2f}")
        gets = "/".join(str(n) for n in sorted(set(f.model_gets)))
        rows.append(
            [f.store, f"{f.seconds:.2f} ±{f.spread * 50:.0f}%", f"{f.mib_per_s:.0f}", gets]
            + [_mib(f.model_bytes_down), str(f.requests), cpu]
        )
    header = ["store", "wall s", "MiB/s delivered", "model GETs", "model MiB down", "requests", "CPU s"]
    return _table(header, rows)


def verdicts_list(verdicts: list[Verdict]) -> str:
    return "\n".join(f"- **{'PASS' if v.passed else 'FAIL'}** {v.target}: {v.detail}" for v in verdicts)


def plot(summaries: list[Summary], candidates: list[Candidate], path: Path) -> bool:
    """Throughput against size per candidate, one panel per direction; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    by_key = {(s.candidate, s.op, s.size): s.mib_per_s for s in summaries}
    sizes = sorted({s.size for s in summaries})
    colours, used = {}, Counter()
    for c in candidates:
        palette = COLOURS.get(c.sdk, ["#636363"])
        colours[c.name] = palette[used[c.sdk] % len(palette)]
        used[c.sdk] += 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    for ax, op in zip(axes, ("put", "get"), strict=True):
        for c in candidates:
            if c.sdk == MEMORY and op == "get":
                continue  # it shares the stored bytes: no copy, so no meaningful rate, and it would squash the axis
            points = [(s, by_key[(c.name, op, s)]) for s in sizes if (c.name, op, s) in by_key]
            if points:
                xs, ys = zip(*points, strict=True)
                style = "--" if c.raw else "-"
                ax.plot(xs, ys, marker="o", linestyle=style, color=colours[c.name], label=c.name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [size_label(s) for s in sizes])
        ax.set_title(f"{op} (MemoryModelStorage: no copy, not shown)" if op == "get" else op)
        ax.set_xlabel("model size")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes:
        ax.set_ylabel("MiB/s (median)")
    handles, labels = axes[0].get_legend_handles_labels()  # the put panel has every candidate
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, title="dashed: raw SDK call / plain file")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def round_plot(summaries: list[RoundSummary], title: str, path: Path) -> bool:
    """The round's wall time per store, split by phase; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(summaries) + 2.2))
    names = [r.store for r in summaries][::-1]
    left = [0.0] * len(names)
    for phase, colour in zip(PHASES, ("#3182bd", "#fd8d3c", "#74c476"), strict=True):
        widths = [r.phase_seconds[phase] for r in summaries][::-1]
        ax.barh(names, widths, left=left, color=colour, label=phase)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("seconds (median per phase)")
    ax.set_title(title)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=len(PHASES))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
