"""GA-DMS for transformers: configuration, model, processor, conversion.

Importing this package registers the classes with transformers' Auto classes, so that
`AutoConfig`, `AutoModel` and `AutoProcessor` resolve `model_type = "gadms"`.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_gadms import PRESETS, GADMSConfig
from .modeling_gadms import GADMSEncoderOutput, GADMSModel, GADMSOutput, GADMSPreTrainedModel
from .processing_gadms import GADMSProcessor, person_image_processor

AutoConfig.register(GADMSConfig.model_type, GADMSConfig, exist_ok=True)
AutoModel.register(GADMSConfig, GADMSModel, exist_ok=True)
AutoProcessor.register(GADMSConfig, GADMSProcessor, exist_ok=True)

# `save_pretrained` then also writes the code files and `auto_map`, so that a saved model loads with
# `trust_remote_code=True` where this package is not installed.
GADMSConfig.register_for_auto_class()
GADMSModel.register_for_auto_class("AutoModel")
GADMSProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "PRESETS",
    "GADMSConfig",
    "GADMSEncoderOutput",
    "GADMSModel",
    "GADMSOutput",
    "GADMSPreTrainedModel",
    "GADMSProcessor",
    "person_image_processor",
]
