"""``--conf-file hindex_sb3.hyperparams.ppo``: RL Zoo reads ``hyperparams`` (from ``ppo.yml``) here."""

from hindex_sb3.hyperparams import ZooHyperparams

hyperparams = ZooHyperparams("ppo")
