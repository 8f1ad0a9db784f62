"""Real models behind the same API: DeepFloyd IF (a pixel cascade like Imagen) and Stable Diffusion.

``UniTune(load_if())`` tunes IF's stage I (64 px) and stage II (256 px) on the source with a rare
token and edits with CFG, prompt guidance, SDEdit late start on stage I and interpolation, exactly
as on the embedded cascade; ``UniTune(load_sd())`` does the same on Stable Diffusion's single latent
stage (late start = img2img strength).  Both are :class:`~unitune_nb.cascade.Cascade` subclasses whose
model-specific behaviour sits in one stage adapter each, so sampling, tuning, editing, reset and the
widgets are the same code.  Their defaults live in :data:`unitune_nb.settings.MODEL_DEFAULTS`.

==================  =================================================================
module              what it holds
==================  =================================================================
common              the prompt encoder (cache, ``free()``), :class:`RealCascade`, loading
deepfloyd_if        :class:`IFCascade`, :func:`load_if`
stable_diffusion    :class:`SDCascade`, its latent adapter, :func:`load_sd`
tiny                :func:`make_tiny_if`, :func:`make_tiny_sd`: random-weight stand-ins for tests
==================  =================================================================

Neither real model is downloaded by this package's tests.
"""
from .common import ACCESS_HELP, IF_STAGE_I, IF_STAGE_II, SD_MODEL, PromptEncoder, RealCascade
from .deepfloyd_if import IF_DEFAULTS, IFCascade, load_if
from .stable_diffusion import SD_DEFAULTS, LatentAdapter, SDCascade, load_sd
from .tiny import make_tiny_if, make_tiny_sd

__all__ = ["ACCESS_HELP", "IF_DEFAULTS", "IF_STAGE_I", "IF_STAGE_II", "SD_DEFAULTS", "SD_MODEL", "IFCascade",
           "LatentAdapter", "PromptEncoder", "RealCascade", "SDCascade", "load_if", "load_sd", "make_tiny_if",
           "make_tiny_sd"]
