"""hindex-sb3: H-InDex hand-informed visual representations for Stable-Baselines3 and Gymnasium.

Importing the package prepares the process for headless rendering (see :mod:`hindex_sb3._platform`) and registers
the ``HInDex/*`` Gymnasium environments.
"""

from hindex_sb3._platform import prepare_process

prepare_process()

from hindex_sb3.envs import register_envs  # noqa: E402

register_envs()

__version__ = "0.1.0"

__all__ = ["__version__", "register_envs"]
