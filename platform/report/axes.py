"""Report views for difficulty axes and variant grids: the metric against each axis per mechanism, and capacity.

Zoology's panel (accuracy against model width, one panel per sequence length) and MAD's difficulty
curves (a task knob on the x axis, one line per mechanism) are the same view: pick an axis for x, draw
one line per mechanism (and per value of its other axes), one panel per value of the other task axes.
The capacity summary names, per mechanism, the hardest task setting it solved at the task's target and
the smallest variant that did, with its interval.
"""

from __future__ import annotations

from typing import Any

from amlab.platform.report.summarise import fmt


def _key(value: Any) -> tuple:
    """Order axis values numerically when they are numbers (or lists of numbers), else as text."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in values)


def _text(axes: dict[str, Any], keys: list[str]) -> str:
    return ",".join(f"{k.split('.', 1)[1]}={axes.get(k)}" for k in keys)


def views(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One view per task and axis that takes at least two values: panels of lines of (x, cell) points."""
    out = []
    cells = [c for c in cells if c.get("axes")]  # only cells of a variant grid have axes
    for task in sorted({c["task_name"] for c in cells}):
        group = [c for c in cells if c["task_name"] == task]
        axes = list(dict.fromkeys(k for c in group for k in c["axes"]))
        for axis in axes:
            xs = sorted({repr(c["axes"].get(axis)): c["axes"].get(axis) for c in group}.values(), key=_key)
            if len(xs) < 2:
                continue
            panel_keys = [k for k in axes if k.startswith("task.") and k != axis]
            line_keys = [k for k in axes if k.startswith("mechanism.") and k != axis]
            panels: dict[str, dict[str, list]] = {}
            for c in sorted(group, key=lambda c: _key(c["axes"].get(axis))):
                panel = _text(c["axes"], panel_keys) or "all"
                line = c["mechanism_name"] + (f"[{_text(c['axes'], line_keys)}]" if line_keys else "")
                panels.setdefault(panel, {}).setdefault(line, []).append((c["axes"].get(axis), c))
            first = group[0]
            out.append({"task": task, "axis": axis, "xs": xs, "metric": first["metric"],
                        "higher_is_better": first["higher_is_better"], "chance": first["chance"],
                        "target": first["target"], "panels": panels})
    return out


def capacity(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mechanism and task: the hardest task setting solved at the target, and the smallest variant that did."""
    rows = []
    cells = [c for c in cells if c.get("axes")]
    pairs = sorted({(c["mechanism_name"], c["task_name"]) for c in cells})
    for mechanism, task in pairs:
        group = [c for c in cells if c["mechanism_name"] == mechanism and c["task_name"] == task]
        task_axes = [k for k in dict.fromkeys(k for c in group for k in c["axes"]) if k.startswith("task.")]
        mech_axes = [k for k in dict.fromkeys(k for c in group for k in c["axes"]) if k.startswith("mechanism.")]
        def difficulty(c, keys=tuple(task_axes)):
            return tuple(_key(c["axes"].get(k)) for k in keys)

        def size(c, keys=tuple(mech_axes)):
            return tuple(_key(c["axes"].get(k)) for k in keys)

        solved = [c for c in group if c.get("reached_target")]
        row = {"mechanism": mechanism, "task": task, "settings": len({difficulty(c) for c in group}),
               "solved_settings": len({difficulty(c) for c in solved})}
        if solved:
            hardest = max(difficulty(c) for c in solved)
            cell = min((c for c in solved if difficulty(c) == hardest), key=size)
            row |= {"hardest": cell["task"], "by": cell["mechanism"], "cell": cell}
        else:
            higher = group[0]["higher_is_better"]
            best = max((c for c in group if c["mean"] is not None), default=None,
                       key=lambda c: c["mean"] if higher else -c["mean"])
            row |= {"hardest": None, "by": best and best["mechanism"], "cell": best}
        rows.append(row)
    return rows


def render_md(cells: list[dict[str, Any]]) -> list[str]:
    """The axis views as tables (metric against the axis, per panel) and the capacity summary, in Markdown."""
    shown = views(cells)
    if not shown:
        return []
    lines = ["", "## Difficulty axes", "",
             "The test metric (mean over seeds ± t-interval) against each axis of the grid, one table per value "
             "of the other task axes; chance and the task's target beside it.", ""]
    for v in shown:
        arrow = "↑" if v["higher_is_better"] else "↓"
        for panel, by_line in v["panels"].items():
            lines += [f"**{v['task']}: {v['metric']} {arrow} against {v['axis']}** ({panel}; chance "
                      f"{fmt(v['chance'], v['metric'])}, target {fmt(v['target'], v['metric'])})", "",
                      "| | " + " | ".join(f"{v['axis'].split('.', 1)[1]}={x}" for x in v["xs"]) + " |",
                      "|---" * (len(v["xs"]) + 1) + "|"]
            for line, points in by_line.items():
                at = {repr(x): c for x, c in points}
                cells_text = [_point(at.get(repr(x))) for x in v["xs"]]
                lines.append(f"| {line} | " + " | ".join(cells_text) + " |")
            lines.append("")
    lines += ["## Capacity", "", "Per mechanism: the hardest task setting it solved (reached the target on the mean over "
              "seeds) and the smallest variant that did.", "",
              "| mechanism | task | settings solved | hardest solved | by | value |", "|---" * 6 + "|"]
    for r in capacity(cells):
        c = r["cell"]
        value = _point(c) if c else "-"
        hardest = r["hardest"] or "none (best shown)"
        lines.append(f"| {r['mechanism']} | {r['task']} | {r['solved_settings']}/{r['settings']} | {hardest} | "
                     f"{r['by'] or '-'} | {value} |")
    return lines


def _point(c: dict[str, Any] | None) -> str:
    if c is None or c["mean"] is None:
        return "-"
    mark = " ✓" if c.get("reached_target") else ""
    return f"{fmt(c['mean'], c['metric'], c['ci'])}{mark}"
