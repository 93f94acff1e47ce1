"""``EMABatchNormCallback``: H-InDex Stage 3, one EMA-BN statistics update per environment step.

The paper adapts the frozen encoder's BatchNorm statistics to the observations met during RL, by an exponential
moving average with a small per-task momentum. In SB3 the encoder runs in many forwards that must *not* move the
statistics: PPO/A2C/TRPO gradient epochs, value bootstrapping for truncated episodes and after each rollout, SAC's
replay-batch forwards, and ``EvalCallback`` episodes. This callback therefore updates on exactly one forward per
step: the one that computes the step's action.

How: SB3 calls callbacks *after* the action of a step was computed, and that forward is where the paper updates
(update, then normalise with the updated statistics, in the same pass, at no extra cost). So at the start of a
rollout and after every step the callback *arms* the extractors with the observations the next action will be
computed from (``model._last_obs``, then ``new_obs``); the extractor updates only in a no-grad forward on exactly
those observations, and disarms. Nothing is armed after the last step of an on-policy rollout (the next forward is
the bootstrap value) or outside rollouts (gradient updates). While random warm-up actions are taken (off-policy
``learning_starts``) no forward happens, hence no update. An extractor the action forward does not run (SAC's and
TD3's critics with ``share_features_extractor=False``) makes the step's update in a forward of its own, so every
extractor's statistics follow the same observations.

The statistics are ordinary BatchNorm buffers of the policy, so ``model.save``/``load`` carry them.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from hindex_sb3._validation import check_int, check_real
from hindex_sb3.ema_bn import set_ema_momentum
from hindex_sb3.extractor import HIndexExtractor

__all__ = ["EMABatchNormCallback"]


class EMABatchNormCallback(BaseCallback):
    """Update the EMA-BN statistics of every :class:`~hindex_sb3.extractor.HIndexExtractor` once per env step.

    :param momentum: EMA momentum m, the weight of the new batch (H-InDex: 0.1 hammer, 0.01 / 0.001 for some DexMV
        tasks, 0 = frozen). It is set on the EMA-BN layers when training starts.
    :param verbose: SB3 callback verbosity. ``ema_bn/updates`` (updates during the last rollout) is always logged.
    """

    def __init__(self, momentum: float, verbose: int = 0) -> None:
        super().__init__(check_int("verbose", verbose, minimum=0))
        # a real number, not a bool or a string: True would silently mean m = 1 (the statistics of the last frame)
        self.momentum = check_real("momentum", momentum, minimum=0.0, maximum=1.0)
        self.extractors: list[HIndexExtractor] = []
        self._count_at_init = 0
        self._count_at_rollout_start = 0

    def _init_callback(self) -> None:
        self.extractors = [m for m in self.model.policy.modules() if isinstance(m, HIndexExtractor) and m.has_ema_bn]
        if not self.extractors:
            raise ValueError(
                "EMABatchNormCallback: the policy has no HIndexExtractor with EMA-BN layers; build it with "
                "hindex_extractor(ema_scope='all' | 'stem') (ViT baselines have no BatchNorm). With pre-computed "
                "features, pass ema_momentum to VecEncode instead."
            )
        for extractor in self.extractors:
            set_ema_momentum(extractor.encoder, self.momentum)
        self._count_at_init = self._counter()

    def _counter(self) -> int:
        """``num_batches_tracked`` of the first EMA-BN layer of the first extractor (checkpoints start it anywhere)."""
        return int(self.extractors[0].encoder.ema_layers[0].num_batches_tracked) if self.extractors else 0

    @property
    def num_updates(self) -> int:
        """Statistics updates made since this callback was initialised (i.e. since ``learn`` started)."""
        return self._counter() - self._count_at_init

    def _arm(self, obs: Any) -> None:
        for extractor in self.extractors:
            extractor.arm_bn_update(obs)

    def _disarm(self) -> None:
        for extractor in self.extractors:
            extractor.disarm_bn_update()

    def _on_rollout_start(self) -> None:
        self._count_at_rollout_start = self.num_updates
        if self.momentum > 0.0 and self.model._last_obs is not None:
            self._arm(self.model._last_obs)

    def _catch_up(self) -> None:
        """Extractors the action forward did not run (still armed while another consumed its arm) update now.

        When none consumed its arm, no action forward happened (off-policy warm-up takes random actions): no update.
        """
        if any(e.is_armed for e in self.extractors) and not all(e.is_armed for e in self.extractors):
            for extractor in self.extractors:
                extractor.apply_armed_update()

    def _on_step(self) -> bool:
        if self.momentum == 0.0:
            return True
        self._catch_up()
        n_steps, n_rollout_steps = self.locals.get("n_steps"), self.locals.get("n_rollout_steps")
        new_obs = self.locals.get("new_obs")
        # On-policy loops increment n_steps after the callback: n_steps + 1 == n_rollout_steps is the last step,
        # after which the next forward is the bootstrap value of new_obs, not an action. DAPG's episode sampler says
        # "no next action" with new_obs=None.
        last = n_rollout_steps is not None and n_steps is not None and n_steps + 1 >= n_rollout_steps
        if last or new_obs is None:
            self._disarm()
        else:
            self._arm(new_obs)
        return True

    def _on_rollout_end(self) -> None:
        self._disarm()
        self.logger.record("ema_bn/updates", self.num_updates - self._count_at_rollout_start)

    def _on_training_end(self) -> None:
        self._disarm()
