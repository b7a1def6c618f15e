"""A miniature pi0.5: LeRobot's real `PI05Policy` at toy widths, for CPU tests and benchmarks.

LeRobot hard-codes pi0.5's sizes: the Gemma widths/depths live in
`modeling_pi05.get_gemma_config` ("gemma_2b" for the VLM, "gemma_300m" for the action expert) and
the SigLIP tower and projector sizes are set inside `PaliGemmaWithExpertModel.__init__` (SigLIP
So400m, projection_dim 2048 = the VLM width). A full pi0.5 is ~3B parameters: no CI machine can
build it per test. `pi05_architecture(arch)` swaps those two construction points for the duration
of a `with` block, so every other line of LeRobot's model (attention masks, KV cache, flow-matching
sampler, adaRMS expert, processors) runs unchanged at small sizes.

A checkpoint built here carries `pi05_architecture.json`; the product's loader
(`coirl_ros.policies.pi05_base`) honours that file and builds the same miniature, so tests load it
through exactly the code path a real checkpoint takes. Real checkpoints have no such file.

The PaliGemma tokenizer is gated on the hub, so the miniature ships its own: a word-level
vocabulary covering pi0.5's prompt ("Task: ..., State: 12 200 ...;\\nAction: ") saved under
`<checkpoint>/tokenizer/`, where the loader looks first.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coirl_ros.constants import ACTION, OBS_STATE, image_key

ARCHITECTURE_FILE = "pi05_architecture.json"
TOKENIZER_DIR = "tokenizer"
# compute_layer_complete in LeRobot reshapes attention output with a literal `8 * head_dim`.
LEROBOT_NUM_HEADS = 8
_PATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class Pi05Architecture:
    """Sizes replacing LeRobot's hard-coded pi0.5 ones (defaults: ~41M parameters, most of them
    the 257k-token embedding, which keeps the real vocabulary size)."""

    vlm_width: int = 64
    vlm_mlp_dim: int = 128
    expert_width: int = 32
    expert_mlp_dim: int = 64
    depth: int = 2  # VLM and expert layers are zipped one to one, so they share a depth
    num_heads: int = LEROBOT_NUM_HEADS
    num_kv_heads: int = 1
    head_dim: int = 16
    vision_width: int = 32
    vision_mlp_dim: int = 64
    vision_depth: int = 1
    vision_heads: int = 2
    patch_size: int = 8

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in asdict(self).items()}
        bad = sorted(k for k, v in sizes.items() if not isinstance(v, int) or v < 1)
        if bad:
            raise ValueError(f"pi0.5 architecture sizes must be positive ints: {bad}")
        if self.num_heads != LEROBOT_NUM_HEADS:
            raise ValueError(
                f"num_heads must be {LEROBOT_NUM_HEADS} (LeRobot hard-codes it), got {self.num_heads}"
            )
        if self.vision_width % self.vision_heads:
            raise ValueError(
                f"vision_width {self.vision_width} not divisible by vision_heads {self.vision_heads}"
            )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ARCHITECTURE_FILE
        path.write_text(json.dumps({"format": "coirl_pi05_architecture", **asdict(self)}, indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Pi05Architecture | None:
        """The override stored in a checkpoint directory, or None for a real pi0.5 checkpoint."""
        path = Path(directory) / ARCHITECTURE_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            if raw.pop("format", None) != "coirl_pi05_architecture":
                raise ValueError("format is not 'coirl_pi05_architecture'")
            return cls(**raw)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: invalid architecture override ({err})") from None


@contextlib.contextmanager
def pi05_architecture(arch: Pi05Architecture | None) -> Iterator[None]:
    """Build `PI05Policy` objects at `arch`'s sizes inside this block (`None`: the real sizes).

    Patches two module globals of `lerobot.policies.pi05.modeling_pi05` under a lock; they are
    read only while a model is constructed, so models built here keep working afterwards.
    """
    if arch is None:
        yield
        return
    from lerobot.policies.pi05 import modeling_pi05 as m

    def gemma_config(variant: str) -> Any:
        if variant == "gemma_2b":
            return m.GemmaConfig(
                arch.vlm_width, arch.depth, arch.vlm_mlp_dim, arch.num_heads, arch.num_kv_heads, arch.head_dim
            )
        if variant == "gemma_300m":
            return m.GemmaConfig(
                arch.expert_width,
                arch.depth,
                arch.expert_mlp_dim,
                arch.num_heads,
                arch.num_kv_heads,
                arch.head_dim,
            )
        raise ValueError(f"Unknown variant: {variant}")

    real_vlm_class = m.PaliGemmaForConditionalGenerationWithPiGemma

    def small_vlm(config: Any) -> Any:
        # LeRobot has just written SigLIP So400m's sizes into config.vision_config; overwrite them
        # and make the projector emit the (small) text width the image tokens are concatenated with.
        vision = config.vision_config
        if vision.image_size % arch.patch_size:
            raise ValueError(f"image size {vision.image_size} not divisible by patch_size {arch.patch_size}")
        vision.hidden_size = arch.vision_width
        vision.intermediate_size = arch.vision_mlp_dim
        vision.num_hidden_layers = arch.vision_depth
        vision.num_attention_heads = arch.vision_heads
        vision.patch_size = arch.patch_size
        vision.projection_dim = config.text_config.hidden_size
        config.projection_dim = config.text_config.hidden_size
        config.text_config.num_image_tokens = (vision.image_size // arch.patch_size) ** 2
        return real_vlm_class(config=config)

    with _PATCH_LOCK:
        saved = m.get_gemma_config, m.PaliGemmaForConditionalGenerationWithPiGemma
        m.get_gemma_config, m.PaliGemmaForConditionalGenerationWithPiGemma = gemma_config, small_vlm
        try:
            yield
        finally:
            m.get_gemma_config, m.PaliGemmaForConditionalGenerationWithPiGemma = saved


PROMPT_WORDS = ("Task", "State", "Action", ":", ",", ";", ".")


def build_word_tokenizer(instructions: Sequence[str]) -> Any:
    """A word-level `PreTrainedTokenizerFast` covering pi0.5's prompt for these instructions.

    Vocabulary: padding/unknown/bos/eos, the prompt's fixed words and punctuation, the 256 state
    bins "0".."255" and every word of the instructions (as LeRobot cleans them: "_" -> " ").
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    words = ["<pad>", "<unk>", "<bos>", "<eos>", *PROMPT_WORDS, *(str(i) for i in range(256))]
    pre = pre_tokenizers.Whitespace()
    for text in instructions:
        words += [w for w, _ in pre.pre_tokenize_str(text.replace("_", " "))]
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )


def build_miniature_pi05(
    state_dim: int,
    action_dim: int,
    cameras: Sequence[str],
    *,
    chunk_size: int = 10,
    image_size: int = 32,
    tokenizer_max_length: int = 48,
    num_inference_steps: int = 10,
    arch: Pi05Architecture | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> Any:
    """A randomly initialised miniature `PI05Policy` (the real class) on CPU."""
    import torch
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    arch = arch or Pi05Architecture()
    inputs = {OBS_STATE: PolicyFeature(FeatureType.STATE, (state_dim,))}
    inputs.update(
        {image_key(c): PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size)) for c in cameras}
    )
    config = PI05Config(
        chunk_size=chunk_size,
        n_action_steps=chunk_size,
        image_resolution=(image_size, image_size),
        tokenizer_max_length=tokenizer_max_length,
        num_inference_steps=num_inference_steps,
        dtype=dtype,
        device="cpu",
        input_features=inputs,
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (action_dim,))},
    )
    torch.manual_seed(seed)
    with pi05_architecture(arch):
        return PI05Policy(config)


def save_miniature_checkpoint(
    policy: Any,
    directory: str | Path,
    instructions: Sequence[str],
    stats: Mapping[str, Mapping[str, np.ndarray]] | None,
    arch: Pi05Architecture | None = None,
) -> Path:
    """Write a checkpoint directory laid out like LeRobot's (plus the architecture override).

    Files: config.json + model.safetensors (`save_pretrained`), policy_preprocessor.json /
    policy_postprocessor.json with their normaliser state (LeRobot's own pi0.5 processor factory,
    given `stats`; None leaves the normaliser without statistics, as in `lerobot/pi05_base`),
    `tokenizer/` and `pi05_architecture.json`.
    """
    import functools

    import torch
    from lerobot.policies.pi05 import processor_pi05

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(directory)
    tokenizer = build_word_tokenizer(instructions)
    tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    (arch or Pi05Architecture()).save(directory)
    tensor_stats = None
    if stats is not None:
        tensor_stats = {
            k: {s: torch.as_tensor(np.asarray(v), dtype=torch.float32) for s, v in d.items()}
            for k, d in stats.items()
        }
    # LeRobot's factory names the gated PaliGemma tokenizer; hand it the local one instead. The
    # saved pipeline then records no tokenizer name, and the loader supplies one (see pi05_base).
    with _PATCH_LOCK:
        real_step = processor_pi05.TokenizerProcessorStep
        processor_pi05.TokenizerProcessorStep = functools.partial(real_step, tokenizer=tokenizer)
        try:
            pre, post = processor_pi05.make_pi05_pre_post_processors(policy.config, tensor_stats)
        finally:
            processor_pi05.TokenizerProcessorStep = real_step
    pre.save_pretrained(directory)
    post.save_pretrained(directory)
    return directory
