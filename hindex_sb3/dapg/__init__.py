"""DAPG for Stable-Baselines3: behaviour cloning plus demo-augmented natural policy gradient (mjrl-faithful)."""

from hindex_sb3.dapg.callbacks import IterationCallback, IterationProgressBar
from hindex_sb3.dapg.dapg import DAPG
from hindex_sb3.dapg.policies import CnnDAPGPolicy, DAPGPolicy, MultiInputDAPGPolicy

__all__ = ["DAPG", "CnnDAPGPolicy", "DAPGPolicy", "IterationCallback", "IterationProgressBar", "MultiInputDAPGPolicy"]
