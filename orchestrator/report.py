"""Stage 8: what a person reads: PNG plots, JUnit XML and a markdown report.

Every number shown comes from the run's own samples; under TCG they are
emulated time, which the report says in its first lines.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI machines
import matplotlib.pyplot as plt  # noqa: E402

EMULATION_NOTE = ("Latencies were measured under QEMU ({accel}): they are emulated time, meaningful only "
                  "as comparisons between variants measured side by side in one run, never as absolute "
                  "microseconds of real hardware.")


def plot_histogram(series, path, title):
    """series: {label: [latency_ns, ...]}; one histogram per label, overlaid."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in series.items():
        if values:
            ax.hist([v / 1000 for v in values], bins=100, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set_xlabel("latency, VMM interrupt entry to guest handler entry (µs, emulated)")
    ax.set_ylabel("interrupts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_cdf(series, path, title):
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, values in series.items():
        if values:
            xs = sorted(v / 1000 for v in values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (µs, emulated, log scale)")
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
    cases = [(f"stage.{r.name}", r.seconds, r.status, r.detail) for r in stage_results]
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


STAT_ROWS = ("n", "min", "mean", "median", "p90", "p99", "p999", "max", "stddev")


def stats_table(columns):
    """columns: {label: stats dict in ns}; a markdown table in µs."""
    head = "| statistic | " + " | ".join(columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for row in STAT_ROWS:
        cells = []
        for st in columns.values():
            v = st.get(row)
            cells.append("–" if v is None else (f"{v}" if row == "n" else f"{v / 1000:.2f}"))
        lines.append(f"| {row}{'' if row == 'n' else ' (µs)'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_box(series, path, title):
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    labels = [k for k, v in series.items() if v]
    ax.boxplot([[v / 1000 for v in series[k]] for k in labels], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("latency (µs, emulated; whiskers 1.5 IQR, outliers hidden)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


FIGURE2_ROWS = ("min", "mean", "median", "p99", "max")


def figure2_table(stats_by_label, baseline):
    """The paper's Figure 2 as a table: each statistic per run (µs), and for each other run the
    difference from the baseline and the improvement in % (positive = lower latency)."""
    labels = list(stats_by_label)
    others = [x for x in labels if x != baseline]
    head = ["statistic"] + [f"{x} (µs)" for x in labels]
    for x in others:
        head += [f"{baseline} − {x} (µs)", f"improvement of {x}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in FIGURE2_ROWS:
        base = stats_by_label[baseline].get(row)
        cells = [row] + [_us(stats_by_label[x].get(row)) for x in labels]
        for x in others:
            value = stats_by_label[x].get(row)
            if base is None or value is None:
                cells += ["–", "–"]
            else:
                cells += [f"{(base - value) / 1000:+.2f}", f"{100 * (base - value) / base:+.1f} %" if base else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _us(value):
    return "–" if value is None else f"{value / 1000:.2f}"
