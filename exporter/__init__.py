"""vm-deploy: compress, export and verify VMamba / MedMamba models for TensorRT.

Pipeline: ``exporter.models`` (official-compatible models) -> ``exporter.compress`` (VMeanba,
QuarterMap) -> ``exporter.export`` (ONNX with custom ops) -> ``exporter.verify`` (Polygraphy parity).
"""
from exporter.models import create_model, list_models

__version__ = "0.1.0"


def load_model(path, arch=None, num_classes=None):
    """Load a checkpoint safely (no code execution) into an eval-mode model; see exporter.checkpoint."""
    from exporter.checkpoint import load_model as _load_model

    return _load_model(path, arch=arch, num_classes=num_classes)


__all__ = ["create_model", "list_models", "load_model", "__version__"]
