"""pi0.5 as the frozen base policy, through LeRobot's `PI05Policy` and its own pre/post processors.

What the adapter maps (DESIGN.md 2.5, config: policy.yaml `base:` with `type: pi05`):

- state: the robot's joint positions in `robot.yaml` order plus the gripper (`observation.state`,
  as ingestion and the episode store hold it). pi0.5 pads it internally to `max_state_dim` (32)
  after LeRobot's normaliser maps it to [-1, 1] and discretises it into the prompt;
- images: each robot camera (uint8 HxWx3 RGB, any size; pi0.5 resizes with padding to 224) goes to
  the checkpoint's `observation.images.<name>`, by name or through `pi05.camera_map`; checkpoint
  cameras the robot lacks get pi0.5's masked blank image;
- language: `task.yaml`'s instruction, tokenised by the checkpoint's tokenizer;
- actions: the first `chunk_size` rows of pi0.5's chunk (50 long), unnormalised by the checkpoint's
  post-processor, are the shared normalised action space (`policy.action_space`) a checkpoint
  fine-tuned on the exported episode store predicts in; clipped to [-1, 1].

Loading is offline and strict (see `pi05_checkpoint`): no file, no statistics, or weights that do
not exactly fill the model is an error, never a randomly initialised pi0.5. Heavy imports (torch,
transformers, LeRobot's policy stack) happen only when a pi0.5 is actually loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coirl_ros.configs.policy import EE_DELTA_DIM, PolicyConfig
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.configs.task import TaskConfig
from coirl_ros.constants import ACTION, OBS_IMAGES, OBS_STATE, image_key
from coirl_ros.policies.pi05_checkpoint import (
    CONFIG_FILE,
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
    WEIGHTS_FILE,
    Pi05CheckpointError,
    check_files,
    check_stats,
    load_tokenizer,
    load_weights_strict,
    recorded_tokenizer_name,
    required_stats,
    resolve_checkpoint,
    stats_from_store,
)
from coirl_ros.policies.pi05_miniature import Pi05Architecture, pi05_architecture

log = logging.getLogger(__name__)
TASK_KEY = "task"  # LeRobot's complementary-data key for the language instruction


def resolve_device(device: str) -> str:
    """ "auto" -> cuda when available, else cpu; "cuda" without a GPU is an error, not a fallback."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "policy.yaml base.device is 'cuda' but torch sees no CUDA device (use auto or cpu)"
        )
    return device


def image_tensor(image: np.ndarray, name: str) -> Any:
    """uint8 HxWx3 (or float in [0, 1], HxWx3 or 3xHxW) -> float32 3xHxW in [0, 1], as LeRobot feeds pi0.5."""
    import torch

    arr = np.asarray(image)
    if arr.ndim != 3 or 3 not in (arr.shape[0], arr.shape[2]):
        raise ValueError(f"camera {name!r}: expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    t = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)
    return t.permute(2, 0, 1) if arr.shape[2] == 3 and arr.shape[0] != 3 else t


def _first(observation: Mapping[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    for key in keys:
        if key in observation:
            return observation[key]
    raise KeyError(f"observation has none of {keys}; it has {sorted(observation)}")


def map_cameras(
    robot_cameras: list[str], checkpoint_keys: list[str], camera_map: Mapping[str, str]
) -> dict[str, str]:
    """robot camera -> checkpoint image key, validated; errors name both sides' cameras."""
    ckpt_names = [k[len(OBS_IMAGES) + 1 :] for k in checkpoint_keys]
    for cam, target in camera_map.items():
        if cam not in robot_cameras:
            raise Pi05CheckpointError(
                f"base.pi05.camera_map: {cam!r} is not a robot camera (robot.yaml has {robot_cameras})"
            )
        if target not in ckpt_names:
            raise Pi05CheckpointError(
                f"base.pi05.camera_map: {cam!r} -> {target!r}, but the checkpoint's cameras are {ckpt_names}"
            )
    mapping = {cam: image_key(camera_map.get(cam, cam)) for cam in robot_cameras}
    mapping = {cam: key for cam, key in mapping.items() if key in checkpoint_keys}
    if not mapping:
        raise Pi05CheckpointError(
            f"no robot camera {robot_cameras} matches a checkpoint camera {ckpt_names}; map them with"
            " base.pi05.camera_map, e.g. {front: base_0_rgb}"
        )
    return mapping


class Pi05BasePolicy:
    """A loaded pi0.5 implementing `BasePolicy` (see the module docstring). Build with `from_config`
    or `load`; `predict_chunk(observation) -> (chunk_size, action_dim)` in [-1, 1]."""

    def __init__(
        self,
        policy: Any,
        preprocessor: Any,
        postprocessor: Any,
        *,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        cameras: Mapping[str, str],
        instruction: str,
        source: str = "",
    ) -> None:
        self.policy = policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)  # frozen: the residual learner never updates the base
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.cameras = dict(cameras)
        self.instruction = instruction
        self.source = source

    @classmethod
    def from_config(cls, policy: PolicyConfig, robot: RobotConfig, task: TaskConfig) -> Pi05BasePolicy:
        """Load `policy.base` (type pi05) for this robot and task."""
        base = policy.base
        return cls.load(
            base.checkpoint,
            robot=robot,
            instruction=task.instruction,
            action_dim=EE_DELTA_DIM if policy.action_space == "ee_delta" else robot.action_dim,
            chunk_size=base.chunk_size,
            device=base.device,
            dtype=base.pi05.dtype,
            tokenizer=base.pi05.tokenizer,
            stats_store=base.pi05.stats_store if base.pi05.stats == "store" else "",
            camera_map=base.pi05.camera_map,
            num_inference_steps=base.pi05.num_inference_steps,
        )

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        robot: RobotConfig,
        instruction: str,
        action_dim: int,
        chunk_size: int = 10,
        device: str = "auto",
        dtype: str = "auto",
        tokenizer: str = "",
        stats_store: str | Path = "",
        camera_map: Mapping[str, str] | None = None,
        num_inference_steps: int | None = None,
    ) -> Pi05BasePolicy:
        """Load a pi0.5 checkpoint offline and check it against the robot; see `Pi05CheckpointError`.

        `stats_store` set: normalisation statistics come from that episode store's demonstrations
        (and define the state/action sizes) instead of the checkpoint.
        """
        import torch
        from lerobot.configs import FeatureType, PolicyFeature, PreTrainedConfig
        from lerobot.policies.factory import make_pre_post_processors
        from lerobot.policies.pi05.configuration_pi05 import PI05Config
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy
        from lerobot.processor import NormalizerProcessorStep, UnnormalizerProcessorStep

        from coirl_ros.data import EpisodeStore

        directory = resolve_checkpoint(str(checkpoint))
        check_files(directory)
        try:
            config = PreTrainedConfig.from_pretrained(directory, local_files_only=True)
        except Exception as err:
            raise Pi05CheckpointError(
                f"{directory / CONFIG_FILE}: unreadable policy config ({type(err).__name__}: {err})"
            ) from None
        if not isinstance(config, PI05Config):
            raise Pi05CheckpointError(
                f"{directory / CONFIG_FILE}: policy type {config.type!r}, expected 'pi05'"
            )
        device = resolve_device(device)
        config.device = device
        config.dtype = ("bfloat16" if device == "cuda" else "float32") if dtype == "auto" else dtype
        if num_inference_steps is not None:
            config.num_inference_steps = num_inference_steps
        state_dim = robot.state_dim
        if chunk_size > config.chunk_size:
            raise Pi05CheckpointError(
                f"base.chunk_size {chunk_size} exceeds the checkpoint's chunk of {config.chunk_size}"
            )
        if state_dim > config.max_state_dim or action_dim > config.max_action_dim:
            raise Pi05CheckpointError(
                f"robot state {state_dim} / action {action_dim} exceed pi0.5's padded sizes"
                f" {config.max_state_dim} / {config.max_action_dim}"
            )

        stats = None
        if stats_store:
            store = EpisodeStore.open(stats_store)
            if (store.spec.state_dim, store.spec.action_dim) != (state_dim, action_dim):
                raise Pi05CheckpointError(
                    f"{store.root}: store has state {store.spec.state_dim} / action {store.spec.action_dim},"
                    f" the robot and action space need {state_dim} / {action_dim}"
                )
            stats = stats_from_store(store)
            # pi0.5's weights depend only on max_state_dim / max_action_dim, so the feature sizes
            # are free: they become the store's (lerobot/pi05_base declares 32-dim placeholders).
            config.input_features[OBS_STATE] = PolicyFeature(FeatureType.STATE, (state_dim,))
            config.output_features[ACTION] = PolicyFeature(FeatureType.ACTION, (action_dim,))
        if OBS_STATE not in config.input_features or ACTION not in config.output_features:
            raise Pi05CheckpointError(
                f"{directory / CONFIG_FILE}: declares no {OBS_STATE!r} input or {ACTION!r} output"
            )
        ckpt_state, ckpt_action = (
            config.input_features[OBS_STATE].shape[0],
            config.output_features[ACTION].shape[0],
        )
        if (ckpt_state, ckpt_action) != (state_dim, action_dim):
            raise Pi05CheckpointError(
                f"{directory / CONFIG_FILE}: checkpoint takes state {ckpt_state} / predicts action"
                f" {ckpt_action}, this robot has state {state_dim} and policy.action_space needs {action_dim}"
                " (a checkpoint fine-tuned on another robot or action space? For a base model use"
                " base.pi05.stats: store)"
            )
        image_keys = [k for k, f in config.input_features.items() if f.type is FeatureType.VISUAL]
        cameras = map_cameras([c.name for c in robot.cameras], image_keys, camera_map or {})

        pre_cfg = json.loads((directory / PREPROCESSOR_FILE).read_text())
        tok, tok_source = load_tokenizer(tokenizer, directory, recorded_tokenizer_name(pre_cfg))
        pre_over: dict[str, Any] = {
            "tokenizer_processor": {"tokenizer": tok},
            "device_processor": {"device": device},
        }
        post_over: dict[str, Any] = {}
        if stats is not None:
            norm = {"stats": stats, "norm_map": config.normalization_mapping}
            pre_over["normalizer_processor"] = {
                **norm,
                "features": {**config.input_features, **config.output_features},
            }
            post_over["unnormalizer_processor"] = {**norm, "features": dict(config.output_features)}
        try:
            pre, post = make_pre_post_processors(
                config, str(directory), preprocessor_overrides=pre_over, postprocessor_overrides=post_over
            )
        except Exception as err:
            raise Pi05CheckpointError(
                f"{directory}: cannot build pi0.5's processors from {PREPROCESSOR_FILE} /"
                f" {POSTPROCESSOR_FILE} ({type(err).__name__}: {err})"
            ) from None
        where = f"{directory} ({'stats_store ' + str(stats_store) if stats else PREPROCESSOR_FILE})"
        for step in pre.steps:
            if isinstance(step, NormalizerProcessorStep):
                if OBS_STATE not in step.features:
                    raise Pi05CheckpointError(
                        f"{where}: the normaliser does not normalise {OBS_STATE!r}"
                        f" (features {sorted(step.features)}); use base.pi05.stats: store"
                    )
                need = required_stats(step.norm_map, "STATE")
                check_stats(step.stats, OBS_STATE, need, state_dim, where)
        for step in post.steps:
            if isinstance(step, UnnormalizerProcessorStep):
                check_stats(step.stats, ACTION, required_stats(step.norm_map, "ACTION"), action_dim, where)

        arch = Pi05Architecture.read(directory)
        if arch is not None:
            log.warning("%s: miniature pi0.5 (%s): a test/benchmark model, not a real pi0.5", directory, arch)
        # Built straight on the target device: a full pi0.5 initialised on the CPU first would take
        # ~16 GiB of host memory and minutes before its random weights are overwritten anyway.
        with pi05_architecture(arch), torch.device(device):
            policy = PI05Policy(config)
        load_weights_strict(policy, directory / WEIGHTS_FILE)
        embed = policy.model.paligemma_with_expert.paligemma.model.language_model.get_input_embeddings()
        if len(tok) > embed.num_embeddings:
            raise Pi05CheckpointError(
                f"tokenizer {tok_source!r} has {len(tok)} tokens, the checkpoint embeds"
                f" {embed.num_embeddings}"
            )
        policy.to(device)
        out = cls(
            policy,
            pre,
            post,
            chunk_size=chunk_size,
            action_dim=action_dim,
            state_dim=state_dim,
            cameras=cameras,
            instruction=instruction,
            source=str(directory),
        )
        out.check_prompt_fits()
        return out

    # ---- BasePolicy ----------------------------------------------------------------------------
    def batch(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The LeRobot batch (unbatched tensors + task string) for one observation dict."""
        import torch

        state = np.asarray(_first(observation, (OBS_STATE, "state")), dtype=np.float32).reshape(-1)
        if state.size != self.state_dim:
            raise ValueError(
                f"observation state has {state.size} values, the robot config has {self.state_dim}"
            )
        batch: dict[str, Any] = {OBS_STATE: torch.as_tensor(state), TASK_KEY: self.instruction}
        for cam, key in self.cameras.items():
            batch[key] = image_tensor(_first(observation, (image_key(cam), cam)), cam)
        return batch

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions for the next `chunk_size` control steps, (chunk_size, action_dim), in [-1, 1]."""
        import torch

        with torch.inference_mode():
            processed = self.preprocessor(self.batch(observation))
            actions = self.postprocessor(self.policy.predict_action_chunk(processed))
        chunk = actions[0, : self.chunk_size, : self.action_dim].float().cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(chunk)):
            raise ValueError("pi0.5 returned NaN or inf actions")
        return np.clip(chunk, -1.0, 1.0)

    def reset(self) -> None:
        """pi0.5 keeps no state between chunk queries; nothing to forget."""
        self.policy.reset()

    def check_prompt_fits(self) -> None:
        """pi0.5's prompt (instruction + one token per state dimension) must not be truncated."""
        import torch
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK

        max_len = self.policy.config.tokenizer_max_length
        batch: dict[str, Any] = {OBS_STATE: torch.zeros(self.state_dim), TASK_KEY: self.instruction}
        with torch.inference_mode():
            used = int(self.preprocessor(batch)[OBS_LANGUAGE_ATTENTION_MASK].sum())
        if used >= max_len:
            raise Pi05CheckpointError(
                f"the pi0.5 prompt for instruction {self.instruction!r} fills all {max_len} tokens and would"
                " be truncated (cutting off the state); shorten task.yaml's instruction"
            )
