"""Selection and plan reports: rich tables on the console, JSON, Markdown and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

from exporter.compress.selection import SelectionResult


# metrics that are fractions of samples (shown in percent / points); kl is in nats, the feature
# metrics (feature-cosine, feature-relerr) are unitless and shown as they are
_PERCENT_METRICS = ("accuracy", "agreement")
_UNITS = {"kl": "nats", "feature-cosine": "cosine", "feature-relerr": "relative L2"}


def _percent(result: SelectionResult) -> bool:
    return result.metric in _PERCENT_METRICS


def _fmt(result: SelectionResult, value: float) -> str:
    return f"{100 * value:.2f}%" if _percent(result) else f"{value:.5f}"


def _fmt_drop(result: SelectionResult, value: float) -> str:
    return f"{100 * value:+.2f} pt" if _percent(result) else f"{value:+.5f}"


def print_selection_table(result: SelectionResult, console=None) -> None:
    """Per-layer impact (impact order), which layers were chosen, and the measured joint metric."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if result.synthetic:
        console.print("[bold red]Calibration was synthetic noise: these scores are meaningless.[/]")
    table = Table(title=f"VMeanba layer selection ({result.metric}, {result.variant}) on {result.calibration}")
    table.add_column("rank", justify="right")
    table.add_column("layer")
    table.add_column(f"{result.metric} alone", justify="right")
    table.add_column("impact", justify="right")
    table.add_column("chosen", justify="center")
    for rank, name in enumerate(result.order, 1):
        table.add_row(str(rank), name, _fmt(result, result.layer_scores[name]), _fmt_drop(result, result.impacts[name]),
                      "[green]yes[/]" if name in result.layers else "")
    console.print(table)
    budget = "" if result.max_drop is None else f", budget {_fmt_drop(result, result.max_drop)}"
    console.print(
        f"uncompressed {result.metric}: {_fmt(result, result.baseline)}; with VMeanba on {len(result.layers)} layer(s) "
        f"{_fmt(result, result.joint)} (drop {_fmt_drop(result, result.joint_drop)}{budget}); "
        f"{result.num_samples} samples, {result.seconds:.1f}s"
    )
    console.print("chosen: " + (", ".join(result.layers) or "(none)"))


def plot_selection(result: SelectionResult, impact_png, curve_png=None) -> dict:
    """The impact-per-layer bar chart, and (when the curve was measured and ``curve_png`` is given)
    the metric-vs-K plot. Returns {"impact_png", "curve_png"} (None where not written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {"impact_png": str(impact_png), "curve_png": None}
    scale = 100.0 if _percent(result) else 1.0
    unit = "points" if _percent(result) else _UNITS.get(result.metric, result.metric)
    names = list(result.impacts)  # forward order

    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(names) + 2), 3.6))
    colours = ["tab:green" if n in result.layers else "tab:grey" for n in names]
    ax.bar(range(len(names)), [scale * result.impacts[n] for n in names], color=colours)
    ax.set_xticks(range(len(names)), [n.replace("layers.", "L").replace(".blocks.", ".") for n in names],
                  rotation=60, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    chosen_x = [i for i, n in enumerate(names) if n in result.layers]
    ax.scatter(chosen_x, [0] * len(chosen_x), marker="v", color="tab:green", zorder=3)  # visible at zero impact
    ax.set_ylabel(f"{result.metric} drop, VMeanba alone ({unit})")
    ax.set_title(f"VMeanba impact per layer (green: chosen){' [SYNTHETIC]' if result.synthetic else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(impact_png, dpi=110, format="png")
    plt.close(fig)

    if result.curve and curve_png is not None:
        written["curve_png"] = str(curve_png)
        ks = [0] + [p["k"] for p in result.curve]
        values = [scale * result.baseline] + [scale * p["metric"] for p in result.curve]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot(ks, values, marker="o")
        ax.axhline(scale * result.baseline, color="grey", lw=0.6, ls="--", label="uncompressed")
        if result.max_drop is not None:
            sign = -1 if result.higher_is_better else 1
            ax.axhline(scale * (result.baseline + sign * result.max_drop), color="tab:red", lw=0.8, ls=":",
                       label="budget")
        ax.scatter([len(result.layers)], [scale * result.joint], marker="*", s=160, color="tab:green", zorder=3,
                   label="chosen set")
        ax.set_xlabel("K (VMeanba layers, smallest impact first)")
        ax.set_ylabel(result.metric + (" (%)" if _percent(result) else f" ({unit})"))
        ax.set_title(f"{result.metric} vs K on {result.num_samples} calibration samples", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(curve_png, dpi=110, format="png")
        plt.close(fig)
    return written


def write_selection_report(result: SelectionResult, out_dir, console=None, print_table: bool = True) -> dict:
    """Write ``selection.json``, ``impact_per_layer.png`` and (when the curve was measured)
    ``metric_vs_k.png`` into ``out_dir``; print the table. Returns {"json", "impact_png", "curve_png"}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(result.to_json() + "\n")
    paths = {"json": str(out / "selection.json"),
             **plot_selection(result, out / "impact_per_layer.png", out / "metric_vs_k.png")}
    if print_table:
        print_selection_table(result, console)
    return paths


# --------------------------------------------------------------------------- the speed-aware plan
def save_figure(fig, path) -> None:
    """PNG through a temporary file beside ``path``, renamed into place (never half-written)."""
    import io

    import matplotlib.pyplot as plt

    from exporter.files import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def format_speedup(value: float | None) -> str:
    return "n/a (noisy cost model)" if value is None else f"{value:.3f}x"


def _plan_scale(plan) -> tuple[float, str]:
    percent = plan.metric in _PERCENT_METRICS
    return (100.0, "points") if percent else (1.0, _UNITS.get(plan.metric, plan.metric))


def plan_table_rows(plan) -> list[dict]:
    """One row per block: option, single-block drop and saving of that option, and whether it is chosen."""
    rows = []
    for name, option in plan.plan.items():
        rows.append({"layer": name, "option": option,
                     "saved_ms": plan.saved_ms.get(name, {}).get(option, 0.0) if option != "none" else 0.0,
                     "impact": plan.impacts.get(name, {}).get(option, 0.0) if option != "none" else 0.0,
                     "measured_as": plan.cost["measured_as"].get(name, name)})
    return rows


def plan_summary(plan) -> str:
    """One sentence: backend, predicted and measured speed-up, measured drop against the budget."""
    scale, unit = _plan_scale(plan)
    measured = "not measured" if plan.measured_speedup is None else f"{plan.measured_speedup:.3f}x measured"
    predicted = format_speedup(plan.predicted_speedup)
    cache = " (cost model from the cache)" if plan.cost_from_cache else ""
    key = plan.cost["key"]
    search = {True: "; search exact (no plan predicted faster holds the budget)",
              False: f"; search not exact within {plan.search_evaluations} evaluations (not proven the fastest)",
              None: ""}[plan.search_exact]
    return (f"plan '{plan.goal}' on the {key['backend']} cost model ({key['device']}, batch {key['batch']}, "
            f"{key['precision']}){cache}: speed-up {predicted} predicted, {measured}; "
            f"{plan.metric} drop {scale * plan.joint_drop:+.3f} {unit} measured (budget {scale * plan.max_drop:g} "
            f"{unit}) on {plan.calibration}{search}")


def print_plan_table(plan, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if plan.synthetic:
        console.print("[bold red]Calibration was synthetic noise: the plan's accuracy side is meaningless.[/]")
    scale, unit = _plan_scale(plan)
    table = Table(title=f"compression plan ({plan.backend} cost model)")
    for col, justify in (("layer", "left"), ("option", "left"), ("saved ms (alone)", "right"),
                         (f"drop alone ({unit})", "right"), ("timed as", "left")):
        table.add_column(col, justify=justify)
    for row in plan_table_rows(plan):
        table.add_row(row["layer"], row["option"], f"{row['saved_ms']:.3f}", f"{scale * row['impact']:+.3f}",
                      row["measured_as"])
    console.print(table)
    console.print(plan_summary(plan))


def plan_markdown(plan) -> list[str]:
    """The plan as Markdown lines (the vm-export report's section and the study's tables use it)."""
    scale, unit = _plan_scale(plan)
    lines = [plan_summary(plan) + ".", "", f"| layer | option | time saved alone (ms) | drop alone ({unit}) | timed as |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['option']} | {r['saved_ms']:.3f} | {scale * r['impact']:+.3f} | {r['measured_as']} |"
              for r in plan_table_rows(plan)]
    lines += ["", "Steps: " + "; ".join(plan.steps)]
    if plan.synthetic:
        lines += ["", "**Calibration was synthetic noise: the plan's accuracy side is meaningless.**"]
    return lines


def plot_plan_pareto(plan, png, ax=None, title: str | None = None) -> str:
    """Predicted speed-up against measured drop of every plan considered, its Pareto front, the chosen
    plan (predicted and measured), the paper's K-smallest-impact VMeanba choices and QuarterMap
    every:3, and the budget. Writes ``png`` (atomically) unless an ``ax`` is given; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exporter.compress.planner import pareto_front

    scale, unit = _plan_scale(plan)
    own = plt.subplots(figsize=(6.4, 4.2)) if ax is None else (None, ax)
    fig, ax = own
    shown = [p for p in plan.considered if p["predicted_speedup"] is not None]
    plans = [p for p in shown if p["kind"] in ("knapsack", "back-off", "upgrade")]
    ax.scatter([scale * p["drop"] for p in plans], [p["predicted_speedup"] for p in plans], s=18, color="tab:grey",
               alpha=0.6, label="plans considered")
    front = pareto_front(plans)
    ax.step([scale * p["drop"] for p in front], [p["predicted_speedup"] for p in front], where="post",
            color="tab:blue", lw=1.2, label="Pareto front (considered plans)")
    paper = sorted((p for p in shown if p["kind"] == "paper-k"), key=lambda p: len(p["plan"]))
    if paper:
        ax.plot([scale * p["drop"] for p in paper], [p["predicted_speedup"] for p in paper], marker="o", ms=4,
                color="tab:orange", lw=1, label="paper: VMeanba on the K smallest-impact layers")
    for p in shown:
        if p["kind"] == "paper-walk":
            ax.scatter([scale * p["drop"]], [p["predicted_speedup"]], marker="s", s=50, color="tab:orange", zorder=3,
                       label="paper: budgeted walk (the plain selection)")
        if p["kind"] == "quartermap-every3":
            ax.scatter([scale * p["drop"]], [p["predicted_speedup"]], marker="D", s=50, color="tab:purple",
                       zorder=3, label="QuarterMap every:3")
    if plan.predicted_speedup is not None:
        ax.scatter([scale * plan.joint_drop], [plan.predicted_speedup], marker="*", s=220, color="tab:green",
                   zorder=4, label="chosen plan (predicted)")
    if plan.measured_speedup is not None:
        ax.scatter([scale * plan.joint_drop], [plan.measured_speedup], marker="*", s=220, facecolors="none",
                   edgecolors="tab:green", zorder=4, label="chosen plan (measured)")
    ax.axvline(scale * plan.max_drop, color="tab:red", ls=":", lw=1, label="budget")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.set_xlabel(f"{plan.metric} drop on calibration ({unit})")
    ax.set_ylabel("speed-up (cost model)")
    key = plan.cost["key"]
    ax.set_title(title or f"plans: {key['backend']}, {key['device'][:40]}, batch {key['batch']}, {key['precision']}"
                 f"{' [SYNTHETIC]' if plan.synthetic else ''}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
        save_figure(fig, png)
    return str(png)


def write_plan_report(plan, out_dir, console=None, print_table: bool = True) -> dict:
    """``plan.json``, ``plan.md`` and ``plan_pareto.png`` in ``out_dir``; prints the table. Returns the paths."""
    from exporter.files import atomic_write_bytes

    out = Path(out_dir)
    paths = {"json": out / "plan.json", "md": out / "plan.md", "pareto_png": out / "plan_pareto.png"}
    atomic_write_bytes(paths["json"], (plan.to_json() + "\n").encode())
    atomic_write_bytes(paths["md"], ("\n".join(["# Compression plan", ""] + plan_markdown(plan)) + "\n").encode())
    plot_plan_pareto(plan, paths["pareto_png"])
    if print_table:
        print_plan_table(plan, console)
    return {k: str(v) for k, v in paths.items()}
