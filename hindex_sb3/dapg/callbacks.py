"""Callbacks that act once per DAPG iteration (one rollout of ``n_trajectories`` episodes + one update).

SB3 callbacks see steps and rollouts; evaluation, curves and checkpoints belong after the *update*, which SB3 has no
hook for. :meth:`DAPG.learn <hindex_sb3.dapg.DAPG.learn>` calls, after each update:

1. :meth:`IterationCallback.on_iteration_end` - record metrics (``self.logger.record``) so they land in the
   iteration's log row; return ``False`` to stop training;
2. the logger dump (one row per iteration: ``train/*`` of this update, ``rollout/*``, ``time/*`` and what step 1
   recorded);
3. :meth:`IterationCallback.on_iteration_logged` - the place for checkpoints, so a checkpoint never precedes the log
   row of its iteration.
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback

__all__ = ["IterationCallback", "IterationProgressBar", "StepProgressBar", "iteration_end", "iteration_logged"]


class IterationCallback(BaseCallback):
    """Base class for callbacks with per-iteration hooks (also usable in a ``CallbackList``)."""

    def on_iteration_end(self) -> bool:
        """Called after each DAPG update, before the log row is written; ``False`` stops training."""
        return bool(self._on_iteration_end())

    def _on_iteration_end(self) -> bool:
        return True

    def on_iteration_logged(self) -> None:
        """Called after the iteration's log row was written."""
        self._on_iteration_logged()

    def _on_iteration_logged(self) -> None:
        return None

    def _on_step(self) -> bool:
        return True


def _iteration_callbacks(callback: BaseCallback | None) -> list[IterationCallback]:
    if isinstance(callback, CallbackList):
        return [c for child in callback.callbacks for c in _iteration_callbacks(child)]
    return [callback] if isinstance(callback, IterationCallback) else []


def iteration_end(callback: BaseCallback | None) -> bool:
    """Run every :meth:`~IterationCallback.on_iteration_end` (all of them, even if one asks to stop)."""
    results = [c.on_iteration_end() for c in _iteration_callbacks(callback)]
    return all(results)


def iteration_logged(callback: BaseCallback | None) -> None:
    for c in _iteration_callbacks(callback):
        c.on_iteration_logged()


class IterationProgressBar(IterationCallback):
    """A progress bar counting DAPG iterations (``learn(n_iterations=...)``), not environment steps."""

    def __init__(self, n_iterations: int, desc: str = "DAPG") -> None:
        super().__init__()
        self.n_iterations = n_iterations
        self.desc = desc
        self.bar = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.n_iterations, desc=self.desc, unit="it")

    def _on_iteration_end(self) -> bool:
        if self.bar is not None:
            self.bar.update(1)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepProgressBar(ProgressBarCallback):
    """SB3's step progress bar, advanced by the envs a DAPG step actually stepped (``len(dones)``).

    SB3's adds ``num_envs`` per step; DAPG's last steps of an iteration step only the envs still running an episode.
    """

    def _on_step(self) -> bool:
        self.pbar.update(len(self.locals["dones"]))
        return True
