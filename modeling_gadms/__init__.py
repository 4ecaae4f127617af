"""GA-DMS for transformers: configuration, model, processor, conversion.

Importing this package registers the classes with transformers' Auto classes, so that
`AutoConfig`, `AutoModel` and `AutoProcessor` resolve `model_type = "gadms"`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoProcessor

from .configuration_gadms import PRESETS, GADMSConfig, GADMSObjectiveConfig
from .gass import gass_scores
from .losses import id_loss, mtp_loss, sdm_loss
from .masking import dual_masking, random_mlm_masking
from .modeling_gadms import (
    GADMSEncoderOutput,
    GADMSForPreTraining,
    GADMSForPreTrainingOutput,
    GADMSModel,
    GADMSOutput,
    GADMSPreTrainedModel,
)
from .processing_gadms import GADMSProcessor, person_image_processor
from .score_bank import ScoreBank

AutoConfig.register(GADMSConfig.model_type, GADMSConfig, exist_ok=True)
AutoModel.register(GADMSConfig, GADMSModel, exist_ok=True)
AutoModelForPreTraining.register(GADMSConfig, GADMSForPreTraining, exist_ok=True)
AutoProcessor.register(GADMSConfig, GADMSProcessor, exist_ok=True)

# `save_pretrained` then also writes the code files and `auto_map`, so that a saved model loads with
# `trust_remote_code=True` where this package is not installed.
GADMSConfig.register_for_auto_class()
GADMSModel.register_for_auto_class("AutoModel")
GADMSForPreTraining.register_for_auto_class("AutoModelForPreTraining")
GADMSProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "PRESETS",
    "GADMSConfig",
    "GADMSEncoderOutput",
    "GADMSForPreTraining",
    "GADMSForPreTrainingOutput",
    "GADMSModel",
    "GADMSObjectiveConfig",
    "GADMSOutput",
    "GADMSPreTrainedModel",
    "GADMSProcessor",
    "ScoreBank",
    "dual_masking",
    "gass_scores",
    "id_loss",
    "mtp_loss",
    "person_image_processor",
    "random_mlm_masking",
    "sdm_loss",
]
