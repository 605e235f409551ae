"""Do faster plans than the paper's choice exist at the same drop? Every VMeanba block subset of the digits
models, and every plan of any options predicted faster than the paper's choice, measured on the calibration
and test splits, with the per-block savings of a cost model read from a planner study (not re-timed).

    python benchmarks/planner_subsets.py --costs docs/results/h200_planner_study.json --out OUT

For each digits model in the study JSON (planner_study.py's ``digits.<family>.cost``) and each budget:

- the paper's choice: select_vmeanba_layers(max_drop=budget), the budgeted walk in impact order;
- every VMeanba subset (2^n, n blocks) with its calibration and test drop and predicted speed-up (the
  cost model's additive prediction);
- every plan of none / vmeanba / quartermap / both predicted faster than the paper's choice, in decreasing
  predicted saving (exporter.compress.planner.plans_by_saving: options that save no time on the cost
  model's target are left out, as the planner leaves them out), each measured on calibration;
- the fastest predicted plan whose calibration drop is at most the paper's (and the budget), and the
  fastest within the budget alone, among the VMeanba subsets and among all plans; the planner's plan of
  the study at that budget, and this code's planner (choose_plan on the same cost model, predicted only)
  at the budget and with the paper's drop as its budget, for comparison.

Writes planner_subsets.json and planner_subsets.md (atomically) into --out and prints the Markdown.
Calibration passes run on the CPU (float32, one thread by default); nothing is timed.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.compress import load_calibration, select_vmeanba_layers  # noqa: E402
from exporter.compress import cost_model as cm  # noqa: E402
from exporter.compress.planner import SEARCH_EVALUATIONS, choose_plan, plans_by_saving  # noqa: E402
from exporter.compress.report import format_speedup  # noqa: E402
from exporter.compress.selection import CalibratedEvaluator, vmeanba_specs  # noqa: E402
from exporter.files import write_json_and_markdown  # noqa: E402
from exporter.models.ss2d import QuarterMapSpec  # noqa: E402
from exporter.samples_data import load_digits_model  # noqa: E402

TOLERANCE = 1e-12


def log(*args) -> None:
    print(*args, flush=True)


def short(plan: dict[str, str]) -> str:
    """layers.2.blocks.3=vmeanba -> 2.3 (VMeanba), 2.3:both / 2.3:qm for the others."""
    marks = {"vmeanba": "", "quartermap": ":qm", "both": ":both"}
    chosen = [n.replace("layers.", "").replace(".blocks.", ".") + marks[o] for n, o in plan.items() if o != "none"]
    return " ".join(chosen) or "(nothing)"


def family_study(family: str, part: dict, budgets: list[float], search_evaluations: int) -> dict:
    model = load_digits_model(family)
    names = list(model.ssm_layers())
    cost = cm.CostModel.from_dict(part["cost"])
    if cost.layers != names:
        raise SystemExit(f"planner_subsets: the cost model of {family} covers {cost.layers}, not {names}")
    saved = {n: {o: cost.saved_ms(n, o) for o in cm.COMPRESSED_OPTIONS} for n in names}
    cal = load_calibration("digits:calibration", family)
    test = load_calibration("digits:test", family)
    evaluators = {"cal": CalibratedEvaluator(model, cal, "accuracy"), "test": CalibratedEvaluator(model, test, "accuracy")}
    vm_of, qm = vmeanba_specs(model, names), QuarterMapSpec()

    def drop(split: str, plan: dict[str, str]) -> float:
        ev = evaluators[split]
        return ev.drop(ev.evaluate({n: cm.option_specs(plan.get(n, "none"), vm_of[n], qm) for n in names}))

    def point(plan: dict[str, str]) -> dict:
        plan = {n: plan.get(n, "none") for n in names}
        return {"plan": {n: o for n, o in plan.items() if o != "none"}, "blocks": short(plan),
                "saved_ms": round(sum(saved[n][o] for n, o in plan.items() if o != "none"), 9),
                "predicted": cost.predicted_speedup(plan), "cal_drop": drop("cal", plan),
                "test_drop": drop("test", plan)}

    t0 = time.perf_counter()
    subsets = [point({n: "vmeanba" for n, on in zip(names, mask) if on})
               for mask in itertools.product((False, True), repeat=len(names))]
    log(f"{family}: {len(subsets)} VMeanba subsets measured (calibration and test) in {time.perf_counter() - t0:.0f} s")
    qm_helps = {n: [o for o in ("quartermap", "both") if saved[n][o] > 0] for n in names}

    def fastest(points, limit):
        ok = [p for p in points if p["cal_drop"] <= limit + TOLERANCE]
        return max(ok, key=lambda p: (p["saved_ms"], -p["cal_drop"], -len(p["plan"]))) if ok else None

    rows = []
    for budget in budgets:
        paper = select_vmeanba_layers(model, cal, max_drop=budget, curve=False, progress=False)
        ref = point({n: "vmeanba" for n in paper.layers})
        at_paper = min(budget, ref["cal_drop"])
        # every plan of any options predicted faster than the paper's, fastest first, on calibration
        t0, faster = time.perf_counter(), []
        for saving, plan in plans_by_saving(saved, names):
            if saving <= ref["saved_ms"] + 1e-9:
                break
            faster.append({"plan": {n: o for n, o in plan.items() if o != "none"}, "saved_ms": saving,
                           "cal_drop": drop("cal", plan)})
        any_at_paper = fastest(faster, at_paper)
        any_in_budget = fastest(faster, budget)
        # this code's planner on the same cost model (predicted only: nothing is timed), at the budget and
        # with the paper's drop as its budget
        planned = {limit: choose_plan(evaluators["cal"], cost, names, limit, vm_of, qm,
                                      search_evaluations=search_evaluations) for limit in (budget, at_paper)}
        row = {"budget": budget, "paper": ref, "paper_measured_walk_drop": paper.joint_drop,
               "vmeanba_at_paper_drop": fastest(subsets, at_paper), "vmeanba_in_budget": fastest(subsets, budget),
               "vmeanba_faster_at_paper_drop": sum(1 for p in subsets if p["cal_drop"] <= at_paper + TOLERANCE
                                                   and p["saved_ms"] > ref["saved_ms"] + 1e-9),
               "any_plans_predicted_faster": len(faster),
               "any_at_paper_drop": point(any_at_paper["plan"]) if any_at_paper else None,
               "any_in_budget": point(any_in_budget["plan"]) if any_in_budget else None,
               "study_plan": next((point(r["plan"]) for r in part["rows"] if r["budget"] == budget), None),
               "planner_in_budget": {**point(planned[budget].plan), "search_exact": planned[budget].search_exact},
               "planner_at_paper_drop": {**point(planned[at_paper].plan),
                                         "search_exact": planned[at_paper].search_exact},
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        log(f"  budget {budget:g}: paper {ref['blocks']} ({100 * ref['cal_drop']:+.2f} pt); {len(faster)} plans "
            f"predicted faster measured in {row['seconds']:.0f} s; fastest at the paper's drop: "
            f"{(row['any_at_paper_drop'] or ref)['blocks']}")
    return {"cost_key": cost.key, "baseline_ms": cost.baseline_ms, "saved_ms": saved,
            "quartermap_or_both_saving_time": qm_helps, "subsets": subsets, "rows": rows,
            "baseline_accuracy": {s: e.baseline for s, e in evaluators.items()},
            "evaluations": {s: e.evaluations for s, e in evaluators.items()}}


def cell(p: dict | None, ref: dict) -> str:
    if p is None or p["saved_ms"] <= ref["saved_ms"] + 1e-9:
        return "none faster (the paper's)"
    return (f"{p['blocks']}: {format_speedup(p['predicted'])}, cal {100 * p['cal_drop']:+.2f} pt, "
            f"test {100 * p['test_drop']:+.2f} pt")


def planner_cell(p: dict) -> str:
    return cell(p, {"saved_ms": -1}) + ("" if p["search_exact"] else " (search not exact)")


def markdown(study: dict) -> str:
    env = study["environment"]
    lines = [f"Command: `{env['command']}`; {env['date_utc']}; calibration passes on {env['machine']}; savings from "
             f"{env['costs']} (not re-timed).", "",
             "Blocks as stage.block (`0.0` = layers.0.blocks.0), VMeanba unless marked `:qm` / `:both`; speed-ups "
             "predicted (additive) from the cost model; drops measured (calibration, test).", "",
             "| model | budget | paper's choice | VMeanba subsets faster at <= its drop | fastest VMeanba subset at <= "
             "the paper's drop | fastest plan of any options at <= the paper's drop (plans checked) | fastest "
             "within the budget (any options) | the study's planner plan | this planner within the budget | this "
             "planner with the paper's drop as budget |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, part in study["digits"].items():
        for r in part["rows"]:
            ref = r["paper"]
            paper = (f"{ref['blocks']}: {format_speedup(ref['predicted'])}, cal {100 * ref['cal_drop']:+.2f} pt, "
                     f"test {100 * ref['test_drop']:+.2f} pt")
            lines.append(f"| {family} | {100 * r['budget']:g} pt | {paper} | {r['vmeanba_faster_at_paper_drop']} | "
                         f"{cell(r['vmeanba_at_paper_drop'], ref)} | {cell(r['any_at_paper_drop'], ref)} "
                         f"({r['any_plans_predicted_faster']}) | {cell(r['any_in_budget'], ref)} | "
                         f"{cell(r['study_plan'], {'saved_ms': -1})} | {planner_cell(r['planner_in_budget'])} | "
                         f"{planner_cell(r['planner_at_paper_drop'])} |")
    for family, part in study["digits"].items():
        helps = {n: o for n, o in part["quartermap_or_both_saving_time"].items() if o}
        lines += ["", f"{family}: blocks where QuarterMap or both save time on the cost model's target: "
                      + (", ".join(f"{n} ({', '.join(o)})" for n, o in helps.items()) or "none")
                      + f"; calibration passes run: {part['evaluations']['cal']} (calibration), "
                        f"{part['evaluations']['test']} (test)."]
    lines += ["", f"Total {study['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--costs", default="docs/results/h200_planner_study.json",
                    help="a planner_study.py JSON whose digits cost models give the per-block savings")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", nargs="+", type=float, default=None,
                    help="accuracy budgets, fractions (default: the study's)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--search-evaluations", type=int, default=SEARCH_EVALUATIONS,
                    help=f"the planner's search evaluations (default {SEARCH_EVALUATIONS})")
    args = ap.parse_args(argv)
    try:
        source = json.loads(Path(args.costs).read_text())
        digits = source["digits"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"planner_subsets: cannot read the digits cost models from {args.costs}: {exc}")
    budgets = args.budgets or sorted({r["budget"] for part in digits.values() for r in part["rows"]})
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # the digits scans underflow into denormals, ~10x slower on CPU
    start = time.perf_counter()
    study = {"environment": {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                             "machine": cm.Timer(1, "fp32", (1, 1), 1, 0).device_name(), "torch": torch.__version__,
                             "command": " ".join(["python"] + sys.argv), "costs": args.costs,
                             "costs_from": source.get("environment", {})},
             "digits": {family: family_study(family, part, budgets, args.search_evaluations)
                        for family, part in digits.items()}}
    study["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    text = markdown(study)
    write_json_and_markdown(out, "planner_subsets", study, text)
    log("\n" + text)
    log(f"wrote {out / 'planner_subsets.json'}, {out / 'planner_subsets.md'}")


if __name__ == "__main__":
    main()
