"""Export an episode store to a LeRobot v3 dataset and import one back, through LeRobot's own API.

Mapping: the store's `reward` / `done` become LeRobot's `next.reward` / `next.done` (shape (1,));
every other array keeps its name. Episode attributes LeRobot has no slot for (source, success,
policy_version, ...) go to the sidecar `<root>/meta/coirl_episodes.json`, keyed by LeRobot episode
index, so an import restores them. LeRobot recomputes timestamps as frame_index / fps on write,
so exported timestamps are the nominal ones. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DONE,
    EPISODE_SOURCES,
    OBS_ENV_STATE,
    OBS_IMAGES,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
    image_key,
)
from coirl_ros.data.episode_spec import EpisodeSpec, FrameError
from coirl_ros.data.episode_store import CorruptEpisodeError, EpisodeStore, StoreError
from coirl_ros.scheduling import preserved_scheduling

LR_REWARD = "next.reward"
LR_DONE = "next.done"
SIDECAR = Path("meta") / "coirl_episodes.json"
SIDECAR_FORMAT = "coirl-lerobot-episodes"
# LeRobot's default probe for torchcodec logs a long traceback when its FFmpeg libraries are
# missing, then falls back to pyav anyway; both decode through FFmpeg, so ask for pyav directly.
VIDEO_BACKEND = "pyav"
# Optional per-frame arrays: LeRobot feature name -> store key (absent ones get the writer's defaults).
OPTIONAL_KEYS = {ACTION_BASE: ACTION_BASE, ACTION_RESIDUAL: ACTION_RESIDUAL, LR_REWARD: REWARD, LR_DONE: DONE}
# EpisodeMeta fields kept in the sidecar; num_frames lets an import spot entries gone stale.
SIDECAR_ATTRS = ("task", "num_frames", "source", "success", "policy_version", "robot_config_hash")
SIDECAR_ATTRS += ("has_policy_actions", "created_at")


class LeRobotIOError(StoreError):
    """A LeRobot dataset cannot be written or read as asked (a StoreError, so the CLI reports it)."""


@dataclass
class ExportReport:
    """Result of `export_to_lerobot`: `exported` pairs (store index, LeRobot index)."""

    root: Path
    repo_id: str
    episodes: int = 0
    frames: int = 0
    exported: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"exported {self.episodes} episode(s), {self.frames} frames to {self.root} ({self.repo_id})"]
        lines += [f"  skipped episode {i}: {reason}" for i, reason in self.skipped]
        return "\n".join(lines)


@dataclass
class ImportReport:
    """Result of `import_from_lerobot`: `imported` pairs (LeRobot index, store index)."""

    store_root: Path
    created_store: bool = False
    episodes: int = 0
    frames: int = 0
    imported: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    ignored_features: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "created" if self.created_store else "appended to"
        lines = [f"imported {self.episodes} episode(s), {self.frames} frames; {verb} {self.store_root}"]
        lines += [f"  skipped episode {i}: {reason}" for i, reason in self.skipped]
        if self.ignored_features:
            lines.append(f"  ignored features: {', '.join(self.ignored_features)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _features(spec: EpisodeSpec, use_videos: bool) -> dict[str, dict[str, Any]]:
    def vec(n: int, dtype: str = "float32") -> dict[str, Any]:
        return {"dtype": dtype, "shape": (n,), "names": None}

    feats = {OBS_STATE: vec(spec.state_dim), LR_REWARD: vec(1), LR_DONE: vec(1, "bool")}
    if spec.env_state_dim:
        feats[OBS_ENV_STATE] = vec(spec.env_state_dim)
    feats.update({k: vec(spec.action_dim) for k in (ACTION, ACTION_BASE, ACTION_RESIDUAL)})
    image = {"dtype": "video" if use_videos else "image", "names": ["height", "width", "channels"]}
    feats.update({image_key(name): {**image, "shape": (h, w, 3)} for name, (h, w) in spec.cameras})
    return feats


def export_to_lerobot(
    store: EpisodeStore,
    root: Path,
    repo_id: str = "local/coirl_export",
    use_videos: bool = False,
    episodes: list[int] | None = None,
    progress: bool = True,
) -> ExportReport:
    """Write the store's episodes (all, or `episodes`) as a new LeRobot v3 dataset at `root`.

    Corrupt or missing episodes are skipped and listed in the report. `use_videos=False` keeps
    images lossless (PNG in parquet); `True` encodes MP4 (lossy). Refuses an existing `root`.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; export writes a new dataset, choose another path")
    if not float(store.spec.fps).is_integer():
        raise LeRobotIOError(f"LeRobot needs an integer fps; the store records at {store.spec.fps}")
    # Imported here: importing lerobot takes seconds, and the CLI should not pay for it elsewhere.
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.utils.utils import SuppressProgressBars

    report = ExportReport(root, repo_id)
    existing = set(store.episode_indices())
    entries: list[dict[str, Any]] = []
    ds = LeRobotDataset.create(
        repo_id,
        fps=int(store.spec.fps),
        features=_features(store.spec, use_videos),
        root=root,
        use_videos=use_videos,
        video_backend=VIDEO_BACKEND,
    )
    # Video encoding (SVT-AV1) would leave this process at real-time priority 99 (scheduling.py).
    with preserved_scheduling():
        try:
            wanted = sorted(existing) if episodes is None else episodes
            for index in tqdm(wanted, "export", unit="ep", disable=not progress):
                if index not in existing:
                    report.skipped.append((index, "no such episode"))
                    continue
                try:  # read whole before adding frames, so a bad chunk never leaves half an episode
                    ep = store.read_episode(index)
                except CorruptEpisodeError as err:
                    report.skipped.append((index, err.reason))
                    continue
                except StoreError as err:  # deleted by another process since listing
                    report.skipped.append((index, str(err)))
                    continue
                arrays = [k for k in store.spec.arrays() if k not in (REWARD, DONE, TIMESTAMP)]
                for t in range(ep.meta.num_frames):
                    frame: dict[str, Any] = {k: ep.data[k][t] for k in arrays}
                    frame[LR_REWARD], frame[LR_DONE] = ep.data[REWARD][t : t + 1], ep.data[DONE][t : t + 1]
                    frame["task"] = ep.meta.task
                    ds.add_frame(frame)
                with SuppressProgressBars():  # datasets' per-episode "Map" bars would drown our own
                    ds.save_episode()
                attrs = ep.meta.to_attrs()
                entries.append({"lerobot_index": report.episodes, "coirl_index": index})
                entries[-1].update({k: attrs[k] for k in SIDECAR_ATTRS})
                report.exported.append((index, report.episodes))
                report.episodes += 1
                report.frames += ep.meta.num_frames
            ds.finalize()  # writes the parquet footers: without it the files are unreadable
            if report.episodes == 0:
                raise LeRobotIOError(f"{store.root}: no episode to export (skipped: {report.skipped})")
        except BaseException:
            # We created root (it did not exist): remove the partial dataset so a retry can use the path.
            with contextlib.suppress(Exception):
                ds.finalize()
            shutil.rmtree(root, ignore_errors=True)
            raise
    sidecar = {"format": SIDECAR_FORMAT, "version": 1, "store": str(store.root), "episodes": entries}
    (root / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return report


def _load_offline(root: Path, repo_id: str) -> Any:
    import huggingface_hub.constants as hub_constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # LeRobot falls back to downloading from the Hub when local files look incomplete; forcing
    # huggingface_hub's offline flag turns any such attempt into an error instead of network traffic.
    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        return LeRobotDataset(repo_id, root=root, return_uint8=True, video_backend=VIDEO_BACKEND)
    except OfflineModeIsEnabled:
        raise LeRobotIOError(f"{root}: LeRobot dataset incomplete on disk (LeRobot wanted the Hub)") from None
    except Exception as err:
        raise LeRobotIOError(f"{root}: cannot load the LeRobot dataset: {type(err).__name__}: {err}") from err
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


def _spec_from_features(features: dict[str, Any], fps: float, root: Path) -> tuple[EpisodeSpec, list[str]]:
    """The store spec a dataset maps to, and the features the store has no place for."""
    for key in (OBS_STATE, ACTION):
        if key not in features or len(features[key]["shape"]) != 1:
            raise LeRobotIOError(f"{root}: dataset needs a 1-D {key!r} feature; it has {sorted(features)}")
    cameras, ignored = [], []
    for key, ft in features.items():
        shape, names = tuple(ft["shape"]), list(ft.get("names") or [])
        if not (key.startswith(f"{OBS_IMAGES}.") and ft["dtype"] in ("image", "video") and len(shape) == 3):
            continue
        chw = bool(names) and names[0] in ("channel", "channels")  # older datasets declare (c, h, w)
        (c, h, w) = shape if chw else (shape[2], shape[0], shape[1])
        if c == 3 and not (ft.get("info") or {}).get("is_depth_map"):
            cameras.append((key[len(OBS_IMAGES) + 1 :], (int(h), int(w))))
        else:
            ignored.append(key)  # the store keeps RGB only
    known = {OBS_STATE, OBS_ENV_STATE, ACTION, *OPTIONAL_KEYS, *(image_key(n) for n, _ in cameras)}
    defaults = {"timestamp", "frame_index", "episode_index", "index", "task_index"}
    ignored += [k for k in features if k not in known | defaults and k not in ignored]
    dims = (int(features[OBS_STATE]["shape"][0]), int(features[ACTION]["shape"][0]))
    env_dim = int(features[OBS_ENV_STATE]["shape"][0]) if OBS_ENV_STATE in features else 0
    return EpisodeSpec(*dims, tuple(cameras), fps, env_dim), ignored


def _open_or_create(store_root: Path, spec: EpisodeSpec) -> tuple[EpisodeStore, bool]:
    if not (store_root / "zarr.json").exists():
        return EpisodeStore.create(store_root, spec), True
    store = EpisodeStore.open(store_root)
    have, want = store.spec, spec
    diffs = [
        f"{k}: store has {getattr(have, k)}, dataset has {getattr(want, k)}"
        for k in ("state_dim", "action_dim", "fps", "env_state_dim")
        if getattr(have, k) != getattr(want, k)
    ]
    if dict(have.cameras) != dict(want.cameras):  # camera order is irrelevant to the data
        diffs.append(f"cameras: store has {dict(have.cameras)}, dataset has {dict(want.cameras)}")
    if diffs:
        raise LeRobotIOError(f"{store_root}: store spec does not match the dataset: {'; '.join(diffs)}")
    return store, False


def import_from_lerobot(
    root: Path,
    store_root: Path,
    repo_id: str | None = None,
    source: str = "teleop",
    progress: bool = True,
) -> ImportReport:
    """Append the episodes of the local LeRobot v3 dataset at `root` to the store at `store_root`.

    Creates the store (spec from the dataset's features) if missing, else checks its spec matches.
    The coirl sidecar, when present, restores source/success/policy_version/...; otherwise every
    episode gets `source` and success None. Missing base/residual actions, reward, done get defaults.
    """
    root, store_root = Path(root), Path(store_root)
    if source not in EPISODE_SOURCES:
        raise ValueError(f"source must be one of {EPISODE_SOURCES}, got {source!r}")
    if not (root / "meta" / "info.json").is_file():  # checked first: LeRobot would try the Hub instead
        raise LeRobotIOError(f"{root}: no LeRobot dataset here (meta/info.json missing)")
    ds = _load_offline(root, repo_id or f"local/{root.name}")
    features = ds.meta.features
    spec, ignored = _spec_from_features(features, float(ds.fps), root)
    store, created = _open_or_create(store_root, spec)
    report = ImportReport(store_root, created, ignored_features=ignored)
    saved = json.loads((root / SIDECAR).read_text()) if (root / SIDECAR).is_file() else {}
    entries = saved.get("episodes", []) if saved.get("format") == SIDECAR_FORMAT else []
    sidecar: dict[int, dict[str, Any]] = {int(e["lerobot_index"]): e for e in entries}
    shapes = {k: store.spec.arrays()[OPTIONAL_KEYS[k]].shape for k in OPTIONAL_KEYS}  # () for reward/done
    fits = {k: k in features and np.prod(features[k]["shape"]) == np.prod(shapes[k]) for k in OPTIONAL_KEYS}
    optional = [k for k, ok in fits.items() if ok]
    report.ignored_features += [k for k in OPTIONAL_KEYS if k in features and k not in optional]
    images = [k for k in store.spec.image_keys() if features[k]["dtype"] == "image"]
    videos = [k for k in store.spec.image_keys() if features[k]["dtype"] == "video"]
    # numpy format decodes PNGs straight to uint8 HWC (bit-exact); torch format would give float CHW.
    env = [OBS_ENV_STATE] if store.spec.env_state_dim else []
    raw = ds.hf_dataset.with_format(
        "numpy", columns=[OBS_STATE, *env, ACTION, "timestamp", *optional, *images]
    )
    episode_col = ds.hf_dataset.with_format("numpy", columns=["episode_index"])[:]["episode_index"]
    with store.writer() as writer:
        for lr_index in tqdm(range(ds.meta.total_episodes), "import", unit="ep", disable=not progress):
            rows = np.flatnonzero(episode_col == lr_index)
            if len(rows) == 0:
                report.skipped.append((lr_index, "no frames in the data files"))
                continue
            entry = sidecar.get(lr_index, {})
            if entry and entry.get("num_frames") != len(rows):
                report.warnings.append(f"episode {lr_index}: sidecar entry is stale (frame count), ignored")
                entry = {}
            ep_source = entry.get("source") if entry.get("source") in EPISODE_SOURCES else source
            writer.robot_config_hash = entry.get("robot_config_hash", "")  # stamped by begin_episode
            task = ds.meta.episodes[lr_index]["tasks"][0]  # LeRobot's own task field is authoritative
            writer.begin_episode(
                task, ep_source, entry.get("policy_version"), entry.get("has_policy_actions")
            )
            try:
                batch = raw[rows.tolist()]
                for t, row in enumerate(rows):
                    frame = {k: batch[k][t] for k in (OBS_STATE, *env, ACTION, *images)}
                    frame[TIMESTAMP] = np.float64(batch["timestamp"][t])  # LeRobot stores float32
                    frame.update({OPTIONAL_KEYS[k]: np.reshape(batch[k][t], shapes[k]) for k in optional})
                    if videos:  # decoded by LeRobot as uint8 CHW (return_uint8=True)
                        item = ds[int(row)]
                        frame.update({k: item[k].permute(1, 2, 0).numpy() for k in videos})
                    writer.add_frame(frame)
                meta = writer.save_episode(success=entry.get("success"))
            except (FrameError, OSError, ValueError, RuntimeError) as err:
                writer.discard_episode()
                report.skipped.append((lr_index, f"{type(err).__name__}: {err}"))
                continue
            report.imported.append((lr_index, meta.index))
            report.episodes += 1
            report.frames += meta.num_frames
    return report
