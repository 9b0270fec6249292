"""`testbed matrix`: the GitHub Actions job matrix of a comparison (or one scenario), from testbed.yaml.

The workflow's `plan` job prints it and its `run` job takes `fromJSON` of it, so testbed.yaml stays
the one list of what CI runs. One entry is one `testbed run` of one scenario: a comparison with
`repeats: N` gives N entries per scenario, in the order `Comparison.schedule()` runs them locally
(A B A B ...). Each entry has:

    name      unique in the matrix, safe in an artifact name: <scenario>[-<sweep point>]-r<repeat>
    scenario  what `testbed run` runs
    variant   its hypervisor variant (stock | natsume)
    images    the image set to build, `testbed images --variant <images>` (and the cache it uses)
    repeat    1..repeats
    sets      `testbed run --set` texts of the entry (a sweep point's overrides; else empty)

A comparison's `sweep:` (see `expand_sweep`) adds `point` (its label) and `overrides` ({dotted field:
value}; the same as `sets`, which the workflow passes on) to the entries of each of its points.
"""

import dataclasses
import itertools
import json
import math
import re
import typing

from . import scenario
from .errors import EXIT_OK, ScenarioError
from .scenario import Problem

GITHUB_MATRIX_LIMIT = 256  # jobs one matrix may generate on GitHub Actions
MAX_SWEEP_AXES = 3
MAX_SWEEP_VALUES = 20
SAFE_TEXT_RE = r"[A-Za-z0-9_.,:=+/-]{1,40}"  # a string value: one shell word, no quoting needed
NOT_SWEPT = {"name", "description", "source"}


def _leaf(path):
    """(field, type) of the scenario setting a dotted path names (e.g. measurement.load_rate_pps),
    or None when it names no setting, or a whole section."""
    cls, found = scenario.Scenario, None
    for part in path.split("."):
        if not dataclasses.is_dataclass(cls):
            return None  # the path goes on below a setting
        fields = {x.name: x for x in dataclasses.fields(cls)}
        if part not in fields:
            return None
        hint = typing.get_type_hints(cls)[part]
        found, cls = (fields[part], hint), hint
    return None if dataclasses.is_dataclass(cls) else found


def _check_value(hint, meta, value):
    """Why `value` does not fit a field of type `hint` with spec `meta`, or None."""
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        if value is None:
            return None
        hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    if value is None:
        return "null is not allowed here"
    if hint is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(value, bool) or not isinstance(value, (int, float) if hint is float else hint):
        return f"expected {hint.__name__}"
    if hint is float and not math.isfinite(value):
        return "not a finite number"
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"choose one of: {', '.join(meta['choices'])}"
    lo, hi = meta.get("min"), meta.get("max")
    if hint in (int, float) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        return f"out of range {lo}..{hi}"
    if hint is str and not re.fullmatch(SAFE_TEXT_RE, value):
        return f"a swept string must match {SAFE_TEXT_RE}"
    if hint is str and meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        return f"must match {meta['pattern']}"
    return None


def _label_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return re.sub(r"[^a-z0-9.]+", "-", str(value).lower()).strip("-") or "x"


def expand_sweep(sweep, where="sweep"):
    """The points of a sweep: every combination of its axes' values, axes in their order.

    `sweep` maps a dotted scenario field (as under `defaults`, e.g. `measurement.load_rate_pps`
    or `hypervisor.variant`) to a list of distinct values. Returns
    [{"label": "load-rate-pps-5000", "overrides": {"measurement.load_rate_pps": 5000}}, ...];
    an empty or missing sweep is the one point without overrides (label "").
    Raises ScenarioError with every problem found.
    """
    if not sweep:
        return [{"label": "", "overrides": {}, "sets": []}]
    problems = []

    def bad(path, message):
        problems.append(Problem(where, path, message))

    if not isinstance(sweep, dict):
        bad("sweep", "expected a mapping of a scenario field (e.g. measurement.load_rate_pps) to a list of values")
        raise ScenarioError(problems)
    if len(sweep) > MAX_SWEEP_AXES:
        bad("sweep", f"{len(sweep)} axes: at most {MAX_SWEEP_AXES}")
    axes = []
    for path, values in sweep.items():
        full = f"sweep.{path}"
        found = _leaf(path) if isinstance(path, str) and path not in NOT_SWEPT else None
        if found is None:
            bad(full, "names no single setting of a scenario: give a dotted field such as "
                      "measurement.load_rate_pps or hypervisor.variant (not a section, a list or a name)")
            continue
        f, hint = found
        if typing.get_origin(hint) in (list, typing.List):
            bad(full, "a list setting cannot be swept")
            continue
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_SWEEP_VALUES:
            bad(full, f"expected a list of 1..{MAX_SWEEP_VALUES} values, got {values!r:.60}")
            continue
        labels = []
        for i, v in enumerate(values):
            if isinstance(v, (dict, list)):
                bad(f"{full}[{i}]", "expected a single value (number, true/false, text or null)")
                continue
            why = _check_value(hint, f.metadata, v)
            if why:
                bad(f"{full}[{i}]", f"{v!r:.60}: {why}")
            labels.append(_label_value(v))
        if len(set(labels)) != len(labels):
            bad(full, "values repeat (or differ only in case or punctuation): each value once")
        axes.append((path, values, path.rsplit(".", 1)[-1].replace("_", "-")))
    if problems:
        raise ScenarioError(problems)
    points = []
    for combo in itertools.product(*[[(path, v, short) for v in values] for path, values, short in axes]):
        points.append({"label": "-".join(f"{short}-{_label_value(v)}" for _, v, short in combo),
                       "overrides": {path: v for path, v, _ in combo},
                       # as `testbed run --set` texts: values in JSON, which YAML reads back as they were
                       "sets": [f"{path}={json.dumps(v)}" for path, v, _ in combo]})
    return points


def entries(target, sweep=None, where="matrix"):
    """The matrix entries of a scenario or a comparison (and, for a comparison, its sweep: the
    `sweep` argument, else the comparison's own `sweep:`)."""
    if isinstance(target, scenario.Comparison):
        runs = target.schedule()
        if sweep is None:
            sweep = getattr(target, "sweep", None)
    else:
        runs = [(1, target)]
    points = expand_sweep(sweep, where=f"{where}: {target.name}")
    out, names = [], set()
    for point in points:
        for repeat, s in runs:
            variant = point["overrides"].get("hypervisor.variant", s.hypervisor.variant)
            base = "-".join(x for x in (s.name, point["label"], f"r{repeat}") if x)
            name, n = base, 1
            while name in names:  # the same scenario twice in one comparison
                n += 1
                name = f"{base}-{n}"
            names.add(name)
            entry = {"name": name, "scenario": s.name, "variant": variant, "images": variant, "repeat": repeat,
                     "sets": list(point["sets"])}
            if point["label"]:
                entry.update(point=point["label"], overrides=dict(point["overrides"]))
            out.append(entry)
    if len(out) > GITHUB_MATRIX_LIMIT:
        raise ScenarioError([Problem(where, target.name, f"{len(out)} runs: more than the {GITHUB_MATRIX_LIMIT} "
                                     "jobs one GitHub Actions matrix may have; lower repeats or the sweep")])
    return out


def matrix(target, sweep=None, where="matrix"):
    """{"include": [entry, ...]}: what `strategy.matrix: ${{ fromJSON(...) }}` takes."""
    return {"include": entries(target, sweep, where)}


def cmd(args):
    """`testbed matrix [NAME] [--github-output FILE]`: the matrix as one line of JSON on stdout;
    with --github-output also `matrix=`, `target=`, `kind=`, `baseline=` (the scenario the
    others are compared with, for `testbed compare --baseline`) and `points=` (the sweep's point
    labels as JSON; `[""]` without a sweep) lines appended to FILE."""
    target = scenario.load_target(args.file, args.target)
    text = json.dumps(matrix(target, where=str(args.file)), separators=(",", ":"))
    print(text)
    if args.github_output:
        comparison = isinstance(target, scenario.Comparison)
        kind, baseline = ("comparison", target.scenarios[0].name) if comparison else ("scenario", target.name)
        with open(args.github_output, "a", encoding="utf-8") as f:
            points = json.dumps([p["label"] for p in expand_sweep(getattr(target, "sweep", None))])
            f.write(f"matrix={text}\ntarget={target.name}\nkind={kind}\nbaseline={baseline}\npoints={points}\n")
    return EXIT_OK
