"""The accuracy-vs-K study of docs/COMPRESSION.md on both bundled digits models.

    python benchmarks/digits_compression_study.py --out docs

VMeanba on the K smallest-impact layers (calibration and held-out test split), the budgeted
selection, QuarterMap every:3 / all, timed; writes docs/img/compression_digits_study.json, the
two plots docs/img/compression_digits_{accuracy_vs_k,impact}.png and prints the Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def digits_study(args) -> dict:
    """Accuracy vs K (layers in calibrated impact order) on the calibration and test splits of both
    digits models, plus QuarterMap every:3 / all, timed; writes a JSON, a markdown table and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exporter.compress import apply_quartermap, apply_vmeanba, load_calibration, select_vmeanba_layers
    from exporter.samples_data import digits_dataset, load_digits_model

    out = Path(args.out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals made CPU evaluation ~10x slower (see select_vmeanba_layers)
    study, lines = {}, []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    fig_i, axes_i = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, ax_i, family in zip(axes, axes_i, ("vmamba", "medmamba")):
        model = load_digits_model(family)
        cal = load_calibration("digits:calibration", family)
        test_x, test_y = digits_dataset("test", family)
        wall, cpu = time.perf_counter(), time.process_time()
        result = select_vmeanba_layers(model, cal, max_drop=args.max_drop, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

        def test_acc(m) -> float:
            with torch.no_grad():
                return (m(test_x).argmax(1) == test_y).sum().item() / len(test_y)

        rows = [{"k": 0, "calibration": result.baseline, "test": test_acc(model), "layer_added": "-"}]
        for point in result.curve:
            rows.append({"k": point["k"], "calibration": point["metric"],
                         "test": test_acc(apply_vmeanba(model, point["layers"])), "layer_added": point["layers"][-1]})
        chosen_test = test_acc(apply_vmeanba(model, result.layers))
        qm = {spec: test_acc(apply_quartermap(model, spec)) for spec in ("every:3", "all")}
        both = test_acc(apply_quartermap(apply_vmeanba(model, result.layers), "every:3"))
        study[family] = {"rows": rows, "chosen": result.layers, "budget": args.max_drop,
                         "chosen_calibration": result.joint, "chosen_test": chosen_test,
                         "quartermap_test": qm, "chosen_plus_quartermap_every3_test": both,
                         "selection_wall_s": round(wall, 2), "selection_cpu_s": round(cpu, 2),
                         "threads": args.threads, "impacts": result.impacts, "order": result.order}
        ks = [r["k"] for r in rows]
        ax.plot(ks, [100 * r["calibration"] for r in rows], marker="o", label="calibration split (selection data)")
        ax.plot(ks, [100 * r["test"] for r in rows], marker="s", label="test split (held out)")
        ax.scatter([len(result.layers)] * 2, [100 * result.joint, 100 * chosen_test], marker="*", s=160,
                   color="tab:green", zorder=3, label=f"chosen set (greedy, budget {100 * args.max_drop:g} pt)")
        ax.set_title(f"digits {family}: VMeanba on the K smallest-impact layers", fontsize=10)
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
        names = list(result.impacts)
        ax_i.bar(range(len(names)), [100 * result.impacts[n] for n in names],
                 color=["tab:green" if n in result.layers else "tab:grey" for n in names])
        ax_i.set_xticks(range(len(names)), [n.replace("layers.", "L").replace(".blocks.", ".") for n in names],
                        fontsize=8)
        ax_i.set_title(f"digits {family}: accuracy drop, VMeanba on one layer", fontsize=10)
        ax_i.axhline(0, color="black", lw=0.6)
        chosen_x = [i for i, n in enumerate(names) if n in result.layers]
        ax_i.scatter(chosen_x, [0] * len(chosen_x), marker="v", color="tab:green", zorder=3,
                     label="chosen" if family == "vmamba" else None)
        lines.append(f"\n**{family}** (8 SS2D layers; selection on {len(cal)} calibration images, "
                     f"{wall:.1f} s wall / {cpu:.1f} s CPU with {args.threads} thread(s))\n")
        lines.append("| K | layer added (impact order) | calibration top-1 | test top-1 |")
        lines.append("|---|---|---|---|")
        lines.extend(f"| {r['k']} | {r['layer_added']} | {100 * r['calibration']:.2f}% | {100 * r['test']:.2f}% |"
                     for r in rows)
        lines.append(f"\nChosen with max_drop {args.max_drop}: {', '.join(result.layers)} -> calibration "
                     f"{100 * result.joint:.2f}%, test {100 * chosen_test:.2f}%. QuarterMap every:3 (test): "
                     f"{100 * qm['every:3']:.2f}%, QuarterMap on all layers: {100 * qm['all']:.2f}%, chosen VMeanba + "
                     f"QuarterMap every:3: {100 * both:.2f}%.")
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend(fontsize=8)
    axes_i[0].set_ylabel("accuracy drop (points)")
    axes_i[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "img" / "compression_digits_accuracy_vs_k.png", dpi=110)
    fig_i.tight_layout()
    fig_i.savefig(out / "img" / "compression_digits_impact.png", dpi=110)
    (out / "img" / "compression_digits_study.json").write_text(json.dumps(study, indent=2) + "\n")
    print("\n".join(lines))
    return study


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    digits_study(parser.parse_args(argv))


if __name__ == "__main__":
    main()
