"""Training-free compression of VMamba / MedMamba: VMeanba and QuarterMap as model transforms,
calibration data, VMeanba layer selection, and the speed-aware planner (both methods per block,
chosen from a cost model measured on the target: ``plan_compression``).

    from exporter.compress import apply_vmeanba, apply_quartermap, select_vmeanba_layers, load_calibration
    small = apply_quartermap(apply_vmeanba(model, "layers.2.blocks.0,layers.2.blocks.1"), "every:3")

Transforms return new models; the input model is never modified. Layer specs: see
``exporter.compress.layer_specs``.
"""
from exporter.compress.calibration import CalibrationSet, family_preprocessing, load_calibration, preprocess_image
from exporter.compress.layer_specs import AutoLayers, every_kth_layers, parse_layer_spec
from exporter.compress.report import plot_selection, print_selection_table, write_selection_report
from exporter.compress.selection import METRICS, SelectionResult, metric_value, model_logits, select_vmeanba_layers
from exporter.compress.transforms import apply_quartermap, apply_vmeanba, describe_compression
from exporter.compress.planner import PlanResult, plan_compression, plan_or_select  # noqa: E402  (after selection)
from exporter.compress.report import write_plan_report  # noqa: E402

__all__ = [
    "apply_vmeanba", "apply_quartermap", "describe_compression", "parse_layer_spec", "AutoLayers",
    "every_kth_layers", "select_vmeanba_layers", "SelectionResult", "METRICS", "metric_value", "model_logits",
    "load_calibration", "CalibrationSet", "family_preprocessing", "preprocess_image", "write_selection_report",
    "plot_selection",
    "print_selection_table", "plan_compression", "plan_or_select", "PlanResult", "write_plan_report",
]
