"""Model families: one file per family, released configurations registered by name."""
from exporter.models.medmamba import MedMamba
from exporter.models.registry import MODEL_CONFIGS, create_model, list_models, register_model
from exporter.models.ss2d import SS2D, QuarterMapSpec, VMeanbaSpec
from exporter.models.vmamba import VMamba

__all__ = ["VMamba", "MedMamba", "SS2D", "VMeanbaSpec", "QuarterMapSpec", "MODEL_CONFIGS", "create_model",
           "list_models", "register_model"]
