"""Selection report: a rich table on the console, JSON, and two PNG plots (matplotlib, Agg)."""
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
