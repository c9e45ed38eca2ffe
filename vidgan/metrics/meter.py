"""The quality meter: how recognisable, diverse, consistent and lively generated clips are, measured by a
classifier trained on the real clips of any labelled prepared folder. Nothing is downloaded.

`meter_for(ROOT)` trains the probe (`vidgan.metrics.probe`) on the folder's clips, holding out whole
videos (every fifth of each class, or its last when it has fewer than five), reports its accuracy on
the held-out clips, and scores those clips as the reference. Beside the folder's classes the probe
learns one more, "no object", from clips that show none (`vidgan.metrics.artefacts`: speckle, blobs,
lattices of transposed-conv artefacts, real clips blurred shapeless): trained on real clips alone, a
classifier calls a texture one of its classes with full confidence. The result is cached in
ROOT/meter/ under the SHA-256 of the folder's meta.json and index.csv and of this protocol, so a
second call reads it.
`Meter.score(clips)` then gives, for generated clips `[N, 3, T, H, W]` in [-1, 1]:

- `confidence`: the mean over clips of the top class probability (a clip's probabilities are the
  mean over its 8-frame windows);
- `recognisable`: the fraction of clips whose top class is one of the folder's, with a probability of
  at least 0.8, and whose features lie where the training clips of that class lie (within 1.25 times
  the 99th percentile of their distances to the class's mean feature);
- `no_object`: the fraction of clips whose top class is "no object";
- `inception_score`: exp E[KL(p(y|x) ‖ p(y))] over the clips and the classes, "no object" among them
  (clips of no object all count as that one class): 1 for one class, the number of classes for clips
  spread evenly and surely over them (Salimans et al. 2016; the MNIST-GAN literature scores with a
  LeNet the same way);
- `consistency`: the fraction of clips whose windows all get the same top class (a clip whose object
  turns into another mid-clip fails);
- `motion`: the mean frame-to-frame displacement of the foreground's centre of mass, in pixels at
  32², and `motion_ratio`, that over the real clips' value;
- `fd`: the Fréchet distance between the probe's features of the clips and of the held-out real clips;
- `class_match` (clips of a class-conditional generator, whose labels are known): the fraction of clips
  recognisable as the class they were drawn from.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from data_tools.atomic import atomic_write_bytes
from data_tools.dataset import ClipDataset
from data_tools.layout import Layout
from vidgan.metrics.artefacts import artefact_clips, roughen
from vidgan.metrics.frechet import GaussianStats
from vidgan.metrics.probe import FEATURES, SIDE, WINDOW, Probe, foreground_tracks, probe_view, window_starts
from vidgan.sample import class_labels, generate

PROTOCOL = "vidgan-meter/3"  # the probe, its training and the scores below; part of every cache key
RECOGNISED = 0.8  # top class probability from which a clip counts as recognisable
RADIUS_SLACK = 1.25  # × the 99th percentile of a class's training distances: its typical region
MAX_TYPICAL = 1024  # training clips that place the classes' typical regions, at most
TRAIN_STEPS = 1200  # probe optimisation steps
TRAIN_BATCH = 32  # real windows per step, and as many object-free ones
MAX_VIEW_BYTES = 2**28  # the training clips' probe views held in memory, at most
MAX_HELD_OUT = 512  # held-out clips scored as the reference, at most
CACHE_DIR = "meter"  # under the prepared folder


class MeterError(ValueError):
    """The folder cannot give a meter, or the clips cannot be scored; the message says why."""


@dataclass
class Meter:
    """A trained probe and the held-out real clips' figures it scores against."""

    probe: Probe
    classes: list[str]
    accuracy: float  # on the held-out clips' windows
    held_out: int  # held-out clips
    real: dict  # the held-out real clips' scores
    real_stats: GaussianStats  # their features
    key: str  # cache key
    centroids: torch.Tensor  # [K, 128] each class's mean feature over training clips
    radii: torch.Tensor  # [K] the radius of each class's typical region around it

    def score(self, clips: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        """The scores of the module docstring for clips `[N, 3, T, H, W]` in [-1, 1] (N ≥ 2); with the
        clips' intended classes `labels` `[N]` (indices into `classes`), `class_match` too."""
        if clips.shape[0] < 2:
            raise MeterError("the meter needs at least 2 clips")
        return scores(read_clips(self.probe, clips), self.centroids, self.radii, self.real_stats,
                      self.real.get("motion"), labels)

    def summary(self) -> dict:
        """The probe's figures: classes, held-out accuracy and clips, the real clips' scores."""
        return {"protocol": PROTOCOL, "classes": self.classes, "probe_accuracy": self.accuracy,
                "held_out_clips": self.held_out, "real": self.real, "key": self.key}


@torch.no_grad()
def read_clips(probe: Probe, clips: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
    """Per-clip readings of `[N, 3, T, H, W]` clips in [-1, 1]: window probabilities `[N, W, K]`,
    features `[N, 128]`, foreground tracks `[N, T, 2]` and their presence `[N, T]`."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise MeterError(f"the meter scores clips [N, 3, T, H, W]; got {list(clips.shape)}")
    if clips.shape[2] < WINDOW:
        raise MeterError(f"clips of {clips.shape[2]} frames: the meter needs at least {WINDOW}")
    starts = window_starts(clips.shape[2])
    probe.eval()
    device = next(probe.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"probs": [], "features": [], "track": [], "present": []}
    for chunk in clips.split(batch):
        view = probe_view(torch.nan_to_num(chunk.to(device).float()))  # [n, 4, T, 32, 32]
        windows = torch.stack([view[:, :, s:s + WINDOW] for s in starts], dim=1)  # [n, W, 4, 8, 32, 32]
        logits, features = probe(windows.flatten(0, 1))
        n = chunk.shape[0]
        out["probs"].append(logits.softmax(dim=1).view(n, len(starts), -1).cpu())
        out["features"].append(features.view(n, len(starts), FEATURES).mean(dim=1).cpu())
        track, present = foreground_tracks(view)
        out["track"].append(track.cpu())
        out["present"].append(present.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def scores(reading: dict[str, torch.Tensor], centroids: torch.Tensor, radii: torch.Tensor,
           real_stats: GaussianStats | None, real_motion: float | None,
           labels: torch.Tensor | None = None) -> dict:
    """Scores from `read_clips`'s readings; `fd` and `motion_ratio` need the real figures,
    `class_match` the clips' intended classes `labels` `[N]`."""
    probs = reading["probs"].double()  # [N, W, K + 1], the last: no object
    clip_probs = probs.mean(dim=1)  # [N, K + 1]
    top, top_class = clip_probs.max(dim=1)
    an_object = top_class < centroids.shape[0]  # [N]
    nearest = top_class.clamp(max=centroids.shape[0] - 1)
    distance = (reading["features"] - centroids[nearest]).norm(dim=1)  # [N]
    typical = an_object & (distance <= radii[nearest])
    marginal = clip_probs.mean(dim=0, keepdim=True)
    kl = (clip_probs * (clip_probs.clamp(min=1e-12).log() - marginal.clamp(min=1e-12).log())).sum(dim=1)
    window_class = probs.argmax(dim=2)  # [N, W]
    track, present = reading["track"], reading["present"]  # [N, T, 2], [N, T]
    step = (track[:, 1:] - track[:, :-1]).norm(dim=2)  # [N, T - 1]
    both = present[:, 1:] & present[:, :-1]
    motion = ((step * both).sum(dim=1) / both.sum(dim=1).clamp(min=1)).mean().item()
    result = {
        "clips": int(probs.shape[0]),
        "confidence": top.mean().item(),
        "recognisable": ((top >= RECOGNISED) & typical).double().mean().item(),
        "inception_score": math.exp(kl.mean().item()),
        "consistency": (window_class == window_class[:, :1]).all(dim=1).double().mean().item(),
        "no_object": (~an_object).double().mean().item(),
        "motion": motion,
    }
    if real_motion:
        result["motion_ratio"] = motion / real_motion
    if real_stats is not None:
        result["fd"] = GaussianStats.from_features(reading["features"].double()).frechet_distance(real_stats)
    if labels is not None:
        recognised = (top >= RECOGNISED) & typical
        result["class_match"] = (recognised & (top_class == labels.cpu())).double().mean().item()
    return result


# --- training the probe -------------------------------------------------------------------------------

def split_by_video(dataset: ClipDataset) -> tuple[np.ndarray, np.ndarray]:
    """(train clip indices, held-out clip indices): whole videos held out, every fifth of each class (the
    last, when a class has 2–4 videos); a class with one video only trains."""
    held = np.zeros(len(dataset), dtype=bool)
    video_label = {}
    for vid, label in zip(dataset.video_ids.tolist(), dataset.labels.tolist()):
        video_label.setdefault(vid, label)
    for label in sorted(set(video_label.values())):
        videos = sorted(v for v, lab in video_label.items() if lab == label)
        out = videos[4::5] if len(videos) >= 5 else videos[-1:] if len(videos) >= 2 else []
        held |= np.isin(dataset.video_ids, out)
    return np.flatnonzero(~held), np.flatnonzero(held)


def _views(dataset: ClipDataset, indices: np.ndarray, batch: int = 64) -> torch.Tensor:
    """The probe views of the clips at `indices`, float16 `[n, 4, T, 32, 32]`."""
    views = []
    for start in range(0, len(indices), batch):
        video = torch.from_numpy(_gather(dataset, indices[start:start + batch]))  # [b, T, S, S, 3]
        clips = video.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)  # [b, 3, T, S, S]
        views.append(probe_view(clips).half())
    return torch.cat(views)


def _gather(dataset: ClipDataset, indices: np.ndarray) -> np.ndarray:
    """uint8 `[b, T, S, S, 3]`, a copy of the clips at `indices`."""
    return np.stack([dataset[int(i)]["video"] for i in indices])


def train_probe(dataset: ClipDataset, train: np.ndarray, seed: int = 0, steps: int = TRAIN_STEPS,
                log=None) -> Probe:
    """A probe trained on windows of the clips at `train` (random windows, shifted by up to 2 px) and,
    as one more class after the corpus's, on as many object-free clips (`artefacts`) per step."""
    frames = dataset.clip_shape[0]
    per_clip = 4 * frames * SIDE * SIDE * 2
    rng = np.random.default_rng(seed)
    if len(train) * per_clip > MAX_VIEW_BYTES:
        train = np.sort(rng.choice(train, MAX_VIEW_BYTES // per_clip, replace=False))
    views = _views(dataset, train)  # [n, 4, T, 32, 32]
    classes = len(dataset.classes)
    labels = torch.from_numpy(dataset.labels[train])
    no_object = torch.full((TRAIN_BATCH,), classes)  # the artefacts' label
    torch.manual_seed(seed)
    draw = torch.Generator().manual_seed(seed)
    probe = Probe(classes + 1)  # the last class: no object
    optimizer = torch.optim.Adam(probe.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    probe.train()
    for step in range(steps):
        pick = torch.from_numpy(rng.integers(0, len(train), TRAIN_BATCH))
        colour = views[pick, :3].float()  # [B, 3, T, 32, 32]
        reals = probe_view(roughen(colour, draw))  # [B, 4, T, 32, 32]
        junk = probe_view(artefact_clips(colour, draw))
        start = int(rng.integers(0, frames - WINDOW + 1))
        x = torch.cat([reals, junk])[:, :, start:start + WINDOW]  # [2B, 4, 8, 32, 32]
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        x = torch.roll(x, shifts=(dy, dx), dims=(3, 4))
        target = torch.cat([labels[pick], no_object])
        loss = F.cross_entropy(probe(x)[0], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None and (step + 1) % 200 == 0:
            log(f"meter: probe step {step + 1}/{steps}, loss {loss.item():.3f}")
    return probe.eval()


def typical_regions(probe: Probe, dataset: ClipDataset, train: np.ndarray, seed: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids `[K, 128]`, radii `[K]`): each class's mean feature over (up to 1024) training clips,
    and `RADIUS_SLACK` × the 99th percentile of their distances to it (0 for a class without clips)."""
    if len(train) > MAX_TYPICAL:
        train = np.sort(np.random.default_rng(seed).choice(train, MAX_TYPICAL, replace=False))
    features = []
    for start in range(0, len(train), 64):
        clips = torch.from_numpy(_gather(dataset, train[start:start + 64])).permute(0, 4, 1, 2, 3)
        features.append(read_clips(probe, clips.float().div_(127.5).sub_(1.0))["features"])
    features, labels = torch.cat(features), torch.from_numpy(dataset.labels[train])
    classes = len(dataset.classes)
    centroids, radii = torch.zeros(classes, FEATURES), torch.zeros(classes)
    for k in range(classes):
        mine = features[labels == k]
        if len(mine):
            centroids[k] = mine.mean(dim=0)
            radii[k] = RADIUS_SLACK * torch.quantile((mine - centroids[k]).norm(dim=1), 0.99)
    return centroids, radii


# --- the cache ---------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meter_key(root: Path, seed: int, steps: int) -> str:
    """SHA-256 of the protocol, the folder's meta.json and index.csv, the seed and the steps."""
    folder = Layout(root)
    description = {"protocol": PROTOCOL, "meta": _sha256(folder.meta), "index": _sha256(folder.index),
                   "seed": seed, "steps": steps}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _save(path: Path, meter: Meter) -> None:
    tensors = {f"probe.{k}": v.contiguous() for k, v in meter.probe.state_dict().items()}
    tensors.update({"centroids": meter.centroids.contiguous(), "radii": meter.radii.contiguous()})
    tensors.update({f"real.{k}": torch.from_numpy(np.ascontiguousarray(v).reshape(-1) if k == "count" else
                                                  np.ascontiguousarray(v))
                    for k, v in meter.real_stats.state_dict().items()})
    summary = {k: v for k, v in meter.summary().items() if k != "key"}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save_tensors(tensors, metadata={"meter": json.dumps(summary)}))


def _load(path: Path, key: str) -> Meter:
    data = path.read_bytes()
    tensors = load_tensors(data)
    header_len = int.from_bytes(data[:8], "little")
    summary = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["meter"])
    if summary["protocol"] != PROTOCOL:
        raise ValueError(f"protocol {summary['protocol']}, expected {PROTOCOL}")
    probe = Probe(len(summary["classes"]) + 1)  # and "no object"
    probe.load_state_dict({k[len("probe."):]: v for k, v in tensors.items() if k.startswith("probe.")})
    real = {k[len("real."):]: v.numpy() for k, v in tensors.items() if k.startswith("real.")}
    real["count"] = real["count"].reshape(())  # stored as [1]
    real_stats = GaussianStats.from_state_dict(real)
    return Meter(probe.eval(), summary["classes"], summary["probe_accuracy"], summary["held_out_clips"],
                 summary["real"], real_stats, key, tensors["centroids"], tensors["radii"])


def meter_for(root: str | Path, seed: int = 0, steps: int | None = None, log=None) -> Meter:
    """The meter of a labelled prepared folder: read from ROOT/meter/ when cached, else trained (two
    to three minutes on two CPU cores) and cached there. `log(message)` hears of the training."""
    log = log or (lambda message: print(message, file=sys.stderr))
    steps = TRAIN_STEPS if steps is None else steps
    root = Path(root)
    try:
        dataset = ClipDataset(root)
    except (FileNotFoundError, ValueError) as e:
        raise MeterError(f"{root}: {e}") from None
    if len(dataset.classes) < 2:
        raise MeterError(f"{root}: the meter needs clips of at least 2 classes (folders); it holds "
                         f"{len(dataset.classes)}")
    if dataset.clip_shape[0] < WINDOW:
        raise MeterError(f"{root}: clips of {dataset.clip_shape[0]} frames; the meter needs at least {WINDOW}")
    key = meter_key(root, seed, steps)
    path = root / CACHE_DIR / f"probe-{key[:16]}.safetensors"
    if path.is_file():
        try:
            return _load(path, key)
        except Exception as e:  # noqa: BLE001 — any unreadable cache file is made again
            log(f"meter: ignoring {path} ({e}); training the probe again")
    train, held = split_by_video(dataset)
    if len(held) == 0:
        raise MeterError(f"{root}: no class has 2 videos, so no video can be held out to test the probe")
    log(f"meter: training the probe on {len(train)} clips of {len(dataset.classes)} classes "
        f"({len(held)} clips of held-out videos)")
    probe = train_probe(dataset, train, seed, steps, log)
    if len(held) > MAX_HELD_OUT:
        held = np.sort(np.random.default_rng(seed).choice(held, MAX_HELD_OUT, replace=False))
    clips = torch.from_numpy(_gather(dataset, held)).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
    meter = Meter(probe, list(dataset.classes), 0.0, len(held), {}, GaussianStats(FEATURES), key,
                  *typical_regions(probe, dataset, train, seed))
    reading = read_clips(probe, clips)
    labels = torch.from_numpy(dataset.labels[held])
    meter.accuracy = (reading["probs"].argmax(dim=2) == labels[:, None]).double().mean().item()
    meter.real_stats = GaussianStats.from_features(reading["features"].double())
    meter.real = scores(reading, meter.centroids, meter.radii, None, None)
    try:
        _save(path, meter)
    except OSError as e:
        log(f"meter: cannot cache the probe in {path.parent} ({e}); it is trained again next time")
    return meter


def score_generator(meter: Meter, generator: torch.nn.Module, count: int, seed: int = 0,
                    classes: list[str] | None = None) -> dict:
    """The meter's scores of `count` clips of `generator` (`generated_clips`). For a class-conditional
    generator whose class names `classes` (by label) are all the meter's, `class_match` too."""
    clips = generated_clips(generator, count, seed)
    asked = class_labels(generator, count)
    labels = None
    if asked is not None and classes and len(classes) == generator.num_classes and set(classes) <= set(meter.classes):
        labels = torch.tensor([meter.classes.index(classes[i]) for i in asked.tolist()])
    return meter.score(clips, labels)


@torch.no_grad()
def generated_clips(generator: torch.nn.Module, count: int, seed: int = 0, batch: int = 64) -> torch.Tensor:
    """`count` clips `[N, 3, T, H, W]` from `generator` in eval mode, from seeded noise, on the CPU; a
    class-conditional generator's clip i of class i mod classes, so every class is scored alike."""
    z_dim = getattr(generator, "z_dim", None)
    if z_dim is None or not hasattr(generator, "frames"):
        raise MeterError(f"the generator is a {type(generator).__name__}, which makes images: the meter "
                         "scores clips of a video generator (model.kind=video)")
    device = next(generator.parameters()).device
    z = torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))
    generator.eval()
    return torch.cat([clips.cpu() for clips in generate(generator, z, batch, class_labels(generator, count))])
