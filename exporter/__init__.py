"""vm-deploy: compress, export and verify VMamba / MedMamba models for TensorRT.

Pipeline: ``exporter.models`` (official-compatible models) -> ``exporter.compress`` (VMeanba,
QuarterMap) -> ``exporter.export`` (ONNX with custom ops) -> ``exporter.engine`` (TensorRT engine,
optional) -> ``exporter.verify`` (Polygraphy parity), chained by ``exporter.pipeline`` (what
``vm-export`` runs).
"""
from exporter.models.loader import load_model
from exporter.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "load_model", "__version__"]
