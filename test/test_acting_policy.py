"""A residual module built from its PolicySpec alone, as a policy node without the learner builds it."""

from __future__ import annotations

import dataclasses

import pytest

from coirl_ros.learning.acting_policy import acting_policy_from_spec, image_policy_extra, image_sizes
from coirl_ros.learning.image_policy import ImageResidualPolicy
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.learning.weight_snapshot import PolicySpec, SnapshotError

STATE = PolicySpec(
    obs_dim=11,
    action_dim=7,
    obs_keys=("observation.state", "observation.environment_state", "action.base"),
    composition="residual",
    scale=0.5,
    architecture="hetstat",
    hidden_sizes=(16, 16),
    extra=(("bottleneck", "4"), ("num_features", "16")),
)


def test_state_and_image_specs_build_the_architecture_they_name() -> None:
    policy = acting_policy_from_spec(STATE)
    assert isinstance(policy, ResidualPolicy) and (policy.obs_dim, policy.action_dim) == (11, 7)
    cameras = {"front": (12, 16), "wrist": (8, 8)}
    image = dataclasses.replace(
        STATE,
        obs_dim=8 + 2 * 2 * 4,  # state + (x, y) of 4 keypoints per camera
        obs_keys=("observation.images.front", "observation.images.wrist", "observation.state", "action.base"),
        architecture="spatial_softmax+hetstat",
        extra=(*STATE.extra, *image_policy_extra(cameras, 4, [(4, 3, 2)])),
    )
    module = acting_policy_from_spec(image)
    assert isinstance(module, ImageResidualPolicy)
    assert image_sizes(image) == {"observation.images.front": (12, 16), "observation.images.wrist": (8, 8)}
    assert image_sizes(STATE) == {}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"architecture": "transformer"}, "architecture 'transformer'"),
        ({"extra": (("num_features", "16"),)}, "bottleneck: expected an integer > 0, got None"),
        ({"extra": (("bottleneck", "-4"), ("num_features", "16"))}, "bottleneck"),
        (
            {"architecture": "spatial_softmax+hetstat", "extra": (*STATE.extra, ("image_sizes", "front:12"))},
            "image_sizes: expected name:HxW",
        ),
    ],
)
def test_a_malformed_spec_is_refused_naming_the_field(change: dict, reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        acting_policy_from_spec(dataclasses.replace(STATE, **change))
