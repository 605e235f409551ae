"""Parity of exported files with PyTorch through Polygraphy, and CPU latency (see docs/EXPORT.md)."""
from exporter.verify.parity import (
    TOLERANCES, LatencyReport, ParityReport, Tolerance, TorchRunner, check_parity, latency_onnxrt, latency_pytorch,
    latency_side_by_side, machine_load_warning, make_feeds, merge_reports,
)

__all__ = [
    "check_parity", "ParityReport", "Tolerance", "TOLERANCES", "TorchRunner", "make_feeds", "merge_reports",
    "latency_pytorch", "latency_onnxrt", "latency_side_by_side", "machine_load_warning", "LatencyReport",
]
