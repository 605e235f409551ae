"""Parity of exported files with PyTorch through Polygraphy, and CPU latency (see docs/EXPORT.md)."""
from exporter.verify.parity import (
    TOLERANCES, LatencyReport, ParityReport, Tolerance, check_parity, latency_onnxrt, latency_pytorch,
    latency_side_by_side, make_feeds, onnxrt_results, pytorch_results, save_polygraphy_data,
)

__all__ = [
    "check_parity", "ParityReport", "Tolerance", "TOLERANCES", "make_feeds", "pytorch_results", "onnxrt_results",
    "save_polygraphy_data", "latency_pytorch", "latency_onnxrt", "latency_side_by_side", "LatencyReport",
]
