"""``--conf-file hindex_sb3.hyperparams.sac``: RL Zoo reads ``hyperparams`` (from ``sac.yml``) here."""

from hindex_sb3.hyperparams import ZooHyperparams

hyperparams = ZooHyperparams("sac")
