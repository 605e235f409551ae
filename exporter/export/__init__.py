"""ONNX export with the custom ops of the contract (see docs/EXPORT.md)."""
from exporter.export.functions import all_function_protos, attach_functions, function_proto, strip_functions
from exporter.export.onnx_export import (
    ExportError, ExportResult, atomic_save, export_onnx, layer_forms, prepare_for_precision, trt_onnx_path_for,
)

__all__ = [
    "export_onnx", "ExportResult", "ExportError", "layer_forms", "prepare_for_precision", "atomic_save",
    "trt_onnx_path_for", "attach_functions", "strip_functions", "function_proto", "all_function_protos",
]
