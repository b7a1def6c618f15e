"""Acting with a loaded residual at control rate: the learner's own module, with its frozen parts cached.

`ResidualPolicy.act` rebuilds HetStat's variance factors (one lower-triangular D×D matrix per action
dimension, ~460k numbers at D = 256, d = 7) on every call: the right thing while training, where they
change every update, but most of a tick's cost when acting (measured ~2-4 ms of a ~2-5 ms call here).
A module adopted by the control loop is never written to again (a swap replaces it), so `FastResidual`
builds the factors once per swap and evaluates the same distribution: the mode is computed exactly as
`ResidualPolicy.act` does (same features, same mean head), and a sample uses the same variance formula
(hetstat.py) with the cached factors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from coirl_ros.learning.distributions import TanhNormal
from coirl_ros.learning.hetstat import MIN_VAR, PRIOR_VAR
from coirl_ros.learning.residual_policy import ResidualPolicy


class FastResidual:
    """`act(x, deterministic)` of a frozen `ResidualPolicy` (module docstring)."""

    def __init__(self, module: ResidualPolicy) -> None:
        self.module = module
        net = module.net
        d, n = net.action_dim, net.num_features
        with torch.no_grad():
            self._factors = torch.tril(net.scale_tril).permute(1, 0, 2).reshape(n, d * n).contiguous()
        self._shape = (d, n)

    @torch.inference_mode()
    def distribution(self, x: np.ndarray) -> TanhNormal:
        """π(·|x) for one raw input x [input_dim], as `module(x[None])` gives it."""
        module, net = self.module, self.module.net
        obs = module.normalise(torch.as_tensor(np.asarray(x, np.float32)).unsqueeze(0))
        f = net.features(obs)
        mean = f @ net.mean_weights
        var = (f @ self._factors).view(-1, *self._shape).square().sum(-1)
        return TanhNormal(mean, math.sqrt(PRIOR_VAR) * torch.tanh(torch.sqrt(MIN_VAR + var)))

    @torch.inference_mode()
    def act(self, x: np.ndarray, deterministic: bool = True, temperature: float = 1.0) -> np.ndarray:
        """u [d]: the mode (no variance needed) or a sample at `temperature` (TanhNormal.sample)."""
        module, net = self.module, self.module.net
        if deterministic:
            obs = module.normalise(torch.as_tensor(np.asarray(x, np.float32)).unsqueeze(0))
            return torch.tanh(net.features(obs) @ net.mean_weights).squeeze(0).numpy()
        return self.distribution(x).sample(temperature).squeeze(0).numpy()
