"""Training: the loop, losses, checkpoints and distributed helpers behind ``medseg train``."""

from medseg.training.loop import TrainResult, resolve_data, resume_config, train

__all__ = ["TrainResult", "resolve_data", "resume_config", "train"]
