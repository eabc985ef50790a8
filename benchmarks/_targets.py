"""One target-line format for every benchmark, so a script can read them.

Each benchmark ends with one line per target::

    target <name>: ours <value> <unit>, baseline <value> <unit>, ratio <r>, goal <goal>: met

(or ``: missed``). ``baseline`` is the comparison measured in the same run on the same input
(``-`` where a target has none, e.g. a fixed latency budget). :func:`parse` reads the lines back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Target", "format_target", "parse", "print_target"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-"
LINE = re.compile(
    rf"^target (?P<name>[A-Za-z0-9_.@-]+): ours (?P<ours>{_NUM}) (?P<ours_unit>\S+), "
    rf"baseline (?P<base>{_NUM}) (?P<base_unit>\S+), ratio (?P<ratio>{_NUM}), "
    r"goal (?P<goal>[^:]+): (?P<verdict>met|missed)$"
)


@dataclass(frozen=True)
class Target:
    name: str
    ours: float
    unit: str
    baseline: float | None
    baseline_unit: str
    ratio: float | None
    goal: str
    met: bool


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a == 0 or 0.01 <= a < 1e6:
        return f"{v:.3g}" if a < 10 else f"{v:.1f}" if a < 1000 else f"{v:.0f}"
    return f"{v:.3g}"


def format_target(
    name: str,
    ours: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_unit: str | None = None,
    ratio: float | None = None,
    goal: str,
    met: bool,
) -> str:
    """The line for one target. ``ratio`` defaults to ours / baseline when both are given."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        raise ValueError(f"target name {name!r}: letters, digits, _ . @ - only")
    if ":" in goal:
        raise ValueError(f"target goal {goal!r} must not contain ':'")
    if ratio is None and baseline not in (None, 0):
        ratio = ours / baseline  # type: ignore[operator]
    return (
        f"target {name}: ours {_num(ours)} {unit}, baseline {_num(baseline)} {baseline_unit or unit}, "
        f"ratio {_num(ratio)}, goal {goal}: {'met' if met else 'missed'}"
    )


def print_target(name: str, ours: float, unit: str, **kw) -> bool:
    """Print the line for one target; return whether it was met."""
    print(format_target(name, ours, unit, **kw), flush=True)
    return bool(kw["met"])


def parse(text: str) -> list[Target]:
    """Every target line in a benchmark's output, in order (other lines are ignored)."""

    def f(s: str) -> float | None:
        return None if s == "-" else float(s)

    out = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            out.append(
                Target(
                    name=m["name"],
                    ours=float(m["ours"]),
                    unit=m["ours_unit"],
                    baseline=f(m["base"]),
                    baseline_unit=m["base_unit"],
                    ratio=f(m["ratio"]),
                    goal=m["goal"],
                    met=m["verdict"] == "met",
                )
            )
    return out
