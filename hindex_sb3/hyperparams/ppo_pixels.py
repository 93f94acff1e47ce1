"""``--conf-file hindex_sb3.hyperparams.ppo_pixels``: RL Zoo reads ``hyperparams`` (from ``ppo_pixels.yml``) here."""

from hindex_sb3.hyperparams import ZooHyperparams

hyperparams = ZooHyperparams("ppo_pixels")
