"""Training: the loop, losses, checkpoints and distributed helpers behind ``medseg train``."""

from medseg.training.loop import TrainResult, resume_config, train

__all__ = ["TrainResult", "resume_config", "train"]
