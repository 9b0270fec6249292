"""Stage 8: what a person reads: PNG plots, JUnit XML and a markdown report.

Every number shown comes from the run's own samples; under TCG they are
emulated time, which the report says in its first lines.
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402

EMULATION_NOTE = ("Latencies were measured under QEMU ({accel}): they are emulated time, meaningful only "
                  "as comparisons between variants measured side by side in one run, never as absolute "
                  "microseconds of real hardware.")
TIMING_NOTES = {
    "instructions": ("Timing: instructions. Under QEMU's -icount shift=0 (single-threaded TCG) the guest TSC "
                     "advances one tick per guest instruction (checked in every run by a calibration loop), so a "
                     "latency is a count of instructions executed between the two stamps, by every vCPU. A µs "
                     "figure is only an estimate at 1 instruction per ns."),
    "host": ("Timing: host. The guest TSC follows the host clock under TCG, so a latency is mostly QEMU's "
             "threads waiting for the host's cores: for smoke tests, not for comparisons."),
}


@dataclass(frozen=True)
class Unit:
    """How a run's latencies are shown: instruction timing in instructions, host timing in µs."""
    timing: str
    key: str  # the summary/sample field that holds the values shown
    label: str  # axis and column label
    scale: float  # shown = value * scale

    def show(self, value):
        if value is None:
            return "–"
        v = value * self.scale
        return f"{v:,.0f}" if self.timing == "instructions" else f"{v:.2f}"


UNITS = {"instructions": Unit("instructions", "latency_ticks", "instructions", 1.0),
         "host": Unit("host", "latency_ns", "µs, host clock", 1e-3)}


def unit_of(summary):
    """The display unit of a run's summary (older bundles without `timing` were host-timed)."""
    return UNITS[summary.get("timing", "host")]


def plot_histogram(series, path, title, unit):
    """series: {label: [latency in unit.key's quantity, ...]}; one histogram per label, overlaid."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in series.items():
        if values:
            ax.hist([v * unit.scale for v in values], bins=100, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set_xlabel(f"latency, VMM interrupt entry to guest handler entry ({unit.label})")
    ax.set_ylabel("interrupts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_cdf(series, path, title, unit):
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in series.items():
        if values:
            xs = sorted(v * unit.scale for v in values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency ({unit.label}, log scale)")
    ax.set_ylabel("fraction of interrupts ≤ x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def junit(path, suite, stage_results, checks):
    """One testcase per stage and per measurement check: CI shows which failed."""
    cases = [(f"stage.{r.name}", r.seconds, r.status,
              (getattr(r, "message", "") or r.detail)
              + (f"\n(the stage waits for: {r.waits_for})" if getattr(r, "waits_for", "") else ""))
             for r in stage_results]
    cases += [(f"check.{c['name']}", 0.0, "passed" if c["ok"] else "failed", c["detail"]) for c in checks]
    root = ET.Element("testsuite", name=suite, tests=str(len(cases)),
                      failures=str(sum(1 for c in cases if c[2] == "failed")),
                      skipped=str(sum(1 for c in cases if c[2] == "skipped")),
                      time=f"{sum(c[1] for c in cases):.1f}")
    for name, seconds, status, detail in cases:
        case = ET.SubElement(root, "testcase", classname=suite, name=name, time=f"{seconds:.1f}")
        if status == "failed":
            ET.SubElement(case, "failure", message=detail[:200]).text = detail
        elif status == "skipped":
            ET.SubElement(case, "skipped")
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return Path(path)


def plot_box(series, path, title, unit):
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    labels = [k for k, v in series.items() if v]
    ax.boxplot([[v * unit.scale for v in series[k]] for k in labels], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel(f"latency ({unit.label}; whiskers 1.5 IQR, outliers hidden)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


FIGURE2_ROWS = ("min", "mean", "median", "p99", "max")


def figure2_table(stats_by_label, baseline, unit):
    """The paper's Figure 2 as a table: each statistic per run (in the unit), and for each other run
    the difference from the baseline and the improvement in % (positive = lower latency)."""
    labels = list(stats_by_label)
    others = [x for x in labels if x != baseline]
    head = ["statistic"] + [f"{x} ({unit.label})" for x in labels]
    for x in others:
        head += [f"{baseline} − {x} ({unit.label})", f"improvement of {x}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in FIGURE2_ROWS:
        base = stats_by_label[baseline].get(row)
        cells = [row] + [unit.show(stats_by_label[x].get(row)) for x in labels]
        for x in others:
            value = stats_by_label[x].get(row)
            if base is None or value is None:
                cells += ["–", "–"]
            else:
                diff = unit.show(base - value)
                cells += [diff if diff.startswith("-") else "+" + diff,
                          f"{100 * (base - value) / base:+.1f} %" if base else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_breakdown(stats, path, title):
    """Stacked bars: per scenario and path class, the median of each segment (ticks), so a reader
    sees which segment one variant removes and which remains. stats: {scenario: segment_stats()}."""
    from .breakdown import SEGMENT_NAMES
    bars = [(f"{name}\n{p} (n={g['n']})", g) for name, groups in stats.items() for p, g in groups.items()
            if p not in ("all", "unmatched") and g["n"]]
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(bars)), 4.5), dpi=110)
    bottoms = [0.0] * len(bars)
    for seg in SEGMENT_NAMES:
        heights = [g[seg]["bar"] or 0 for _, g in bars]
        ax.bar(range(len(bars)), heights, bottom=bottoms, label=seg)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:,.0f}", (x, total), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
    ax.set_ylabel("ticks (median per segment, 0 where absent)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
