"""`vidgan info`: what a prepared folder holds, or how `prepare` sees one video file."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

from data_tools.layout import FORMAT, META, Layout, Meta, read_index
from data_tools.storage import REMAKE, check_shards


_RANGES = {0: "unspecified", 1: "limited", 2: "full", None: "unknown"}


def describe(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return describe_dataset(path)
    if path.is_file():
        return describe_video(path)
    raise FileNotFoundError(f"no such file or folder: {path}")


def describe_dataset(root: Path) -> str:
    folder = Layout(root)
    if not folder.meta.is_file():
        if folder.plan.is_file():
            raise ValueError(f"{root} is an unfinished `vidgan prepare` run: rerun it to finish")
        raise ValueError(f"{root} is not a `vidgan prepare` output folder (no {META})")
    meta = Meta.from_json(json.loads(folder.meta.read_text()))
    try:
        check_shards(root, meta.shards, meta.clip_shape[1:])
    except (OSError, ValueError) as e:
        raise type(e)(f"{e}; {REMAKE}") from None
    counts, opts = meta.counts, meta.options
    per_class = Counter(clip.label for clip in read_index(folder.index))
    skipped = json.loads(folder.skipped.read_text())
    T, S = meta.clip_shape[0], meta.clip_shape[1]
    lines = [
        f"{root}  ({FORMAT})",
        f"source: {meta.source}",
        f"clips: {counts.clips} of [{T}, {S}, {S}, 3] uint8 in {len(meta.shards)} shard(s), "
        f"{counts.frames_stored} frames stored",
        f"videos: {counts.videos} ({counts.read} read, {counts.too_short} shorter than one clip, "
        f"{counts.skipped} skipped)",
        "options: " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())),
        f"classes ({len(meta.classes)}):",
    ]
    lines += [f"  {i:4d} {name}: {per_class.get(i, 0)} clips" for i, name in enumerate(meta.classes)]
    if skipped:
        lines.append(f"skipped ({len(skipped)}):")
        lines += [f"  {s['path']}: {s['reason']}" for s in skipped]
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta.versions.items())))
    return "\n".join(lines)


def describe_video(path: Path) -> str:
    from data_tools.backends.base import DecodeError
    from data_tools.backends.pyav import open_video, stream_sar
    from data_tools.geometry import normalise_rotation

    try:
        container, stream = open_video(path)
    except DecodeError as e:
        return f"{path}: cannot be used: {e.reason}"
    with container:
        ctx = stream.codec_context
        rotation = 0
        for frame in container.decode(stream):
            rotation = normalise_rotation(frame.rotation)
            pix_fmt, color_range = frame.format.name, frame.color_range
            break
        else:
            pix_fmt, color_range = ctx.pix_fmt, None
        duration = (Fraction(stream.duration) * stream.time_base) if stream.duration else None
        rate = stream.average_rate or stream.guessed_rate
        container.seek(0, stream=stream)
        dropped = sum(packet.is_discard for packet in container.demux(stream))  # by an MP4 edit list
        declared = f"frames declared: {stream.frames or 'unknown'}"
        if dropped:
            declared += f" ({dropped} dropped by its edit list, never shown)"
        return "\n".join([
            f"{path}",
            f"container: {container.format.name}, codec: {ctx.name}, pixel format: {pix_fmt}"
            f" (colour range: {_RANGES.get(color_range, color_range)})",
            f"size: {ctx.width}x{ctx.height}, pixel aspect {stream_sar(stream)}, display rotation {rotation}°",
            f"frame rate: {float(rate):.3f}/s" if rate else "frame rate: unknown",
            f"{declared}, duration: "
            + (f"{float(duration):.3f} s" if duration is not None else "unknown"),
        ])
