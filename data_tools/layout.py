"""The prepared folder: its file names, its format, and the typed records its files hold.

    meta.json                 options, classes, counts, versions, shards; written last: its presence
                              means the dataset is complete
    index.csv                 one row per clip: path,label,start,shard,offset,timestamps
    skipped.json              every file left out, with the reason
    shards/shard-NNNNN.npy    uint8 [F, S, S, 3]: the stored frames of consecutive videos
    shards/shard-NNNNN.json   the records of the videos in that shard
    .work/plan.json           what an unfinished run makes, so that a rerun knows whether to resume it
    .work/parts/<key>.npy     frames of a video that an unfinished run set aside, ...
    .work/parts/<key>.json    ... and its record (both deleted when the run completes)
    .lock                     held by a running `prepare`, so that a second one into the folder stops

The one module that spells these names: `prepare` writes them; `ClipDataset`, `vidgan info`,
`storage.check_shards` and FVD's statistics cache read them. Each record is validated where it is
built; `to_json()` is the exact object written (with sorted keys), `from_json()` reads it back, so
the files stay byte for byte what they were before the records were typed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, NamedTuple

FORMAT = "vidgan-clips/1"
META = "meta.json"
INDEX = "index.csv"
SKIPPED = "skipped.json"
SHARDS = "shards"
WORK = ".work"
LOCK = ".lock"
ENTRIES = frozenset({META, INDEX, SKIPPED, SHARDS, WORK, LOCK})  # every entry `prepare` writes in a folder
STATUSES = ("ok", "skipped")


def shard_name(index: int, suffix: str) -> str:
    """`shard-00012.npy` (frames) or `shard-00012.json` (records)."""
    return f"shard-{index:05d}{suffix}"


def part_key(rel_path: str) -> str:
    """The name (without suffix) of a video's files under `.work/parts/`."""
    return hashlib.sha1(rel_path.encode()).hexdigest()[:20]


class Layout:
    """The paths of one prepared folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.meta = self.root / META
        self.index = self.root / INDEX
        self.skipped = self.root / SKIPPED
        self.shards = self.root / SHARDS
        self.work = self.root / WORK
        self.plan = self.work / "plan.json"
        self.parts = self.work / "parts"
        self.lock = self.root / LOCK

    def shard_frames(self, index: int) -> Path:
        return self.shards / shard_name(index, ".npy")

    def shard_records(self, index: int) -> Path:
        return self.shards / shard_name(index, ".json")

    def part_frames(self, key: str) -> Path:
        return self.parts / f"{key}.npy"

    def part_record(self, key: str) -> Path:
        return self.parts / f"{key}.json"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class ClipRow(NamedTuple):
    """One row of index.csv: a clip, its source and label, and where its frames are."""

    path: str  # the video, relative to SRC, `/` separators
    label: int  # class index
    start: int  # the clip's first frame in the video's output frame sequence
    shard: int  # index of the shard that holds it
    offset: int  # the clip's first frame in that shard
    timestamps: str  # the T source times shown, in seconds ("%.6f" each), separated by spaces


INDEX_HEADER = ",".join(ClipRow._fields) + "\n"


def read_index(path: Path) -> Iterator[ClipRow]:
    """The clips of an index.csv, in order."""
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        _require(header == list(ClipRow._fields), f"{path}: columns {header}, expected {list(ClipRow._fields)}")
        for path_, label, start, shard, offset, timestamps in rows:
            yield ClipRow(path_, int(label), int(start), int(shard), int(offset), timestamps)


@dataclass(frozen=True)
class VideoRecord:
    """What one video gave: built by the worker that decoded it, written to `.work/parts/<key>.json`
    when it waits for its turn, and, placed (with `shard_offset`), to its shard's records."""

    path: str  # relative to SRC, POSIX separators
    label: int  # class index
    status: str  # "ok" or "skipped"
    reason: str | None = None  # why it was skipped; None when ok
    backend: str | None = None  # the decoder that read it; None when skipped
    decoded_frames: int = 0  # frames decoded (decoding stops after the last clip)
    output_frames: int = 0  # length of its output frame sequence, as far as it was read
    frames: int = 0  # stored frames: those of its clips, each once
    clips: list[list[int]] = field(default_factory=list)  # [start, offset among its stored frames] per clip
    times: list[float] = field(default_factory=list)  # seconds, per stored frame (rounded to 1 µs)
    damaged_packets: int = 0  # packets skipped as undecodable; written only when > 0
    shard_offset: int | None = None  # its first frame in its shard; written once placed

    def __post_init__(self) -> None:
        name = self.path
        _require(self.status in STATUSES, f"{name}: status {self.status!r}, expected one of {STATUSES}")
        _require(self.label >= 0, f"{name}: label must be >= 0, got {self.label}")
        if self.status == "ok":
            _require(self.reason is None and self.backend is not None,
                     f"{name}: a video read has a backend and no reason, got {self.backend!r}, {self.reason!r}")
        else:
            _require(bool(self.reason) and self.frames == 0 and not self.clips and self.backend is None,
                     f"{name}: a skipped video has a reason, no backend and no frames")
        _require(min(self.decoded_frames, self.output_frames, self.damaged_packets) >= 0,
                 f"{name}: frame and packet counts must be >= 0")
        _require(len(self.times) == self.frames, f"{name}: {len(self.times)} times for {self.frames} stored frames")
        _require(all(start >= 0 and 0 <= offset < self.frames for start, offset in self.clips),
                 f"{name}: a clip lies outside the {self.frames} stored frames")
        _require(self.shard_offset is None or self.shard_offset >= 0,
                 f"{name}: shard_offset must be >= 0, got {self.shard_offset}")

    @classmethod
    def skipped(cls, path: str, label: int, reason: str) -> VideoRecord:
        return cls(path=path, label=label, status="skipped", reason=reason)

    def __getitem__(self, key: str):
        """A field by its key in the record's JSON, as the record reads in its file."""
        return getattr(self, key)

    def placed(self, shard_offset: int) -> VideoRecord:
        """This record, its frames placed from `shard_offset` in its shard."""
        return replace(self, shard_offset=shard_offset)

    def to_json(self) -> dict:
        record = {"path": self.path, "label": self.label, "status": self.status, "reason": self.reason,
                  "backend": self.backend, "decoded_frames": self.decoded_frames,
                  "output_frames": self.output_frames, "clips": self.clips, "times": self.times,
                  "frames": self.frames}
        if self.damaged_packets:
            record["damaged_packets"] = self.damaged_packets
        if self.shard_offset is not None:
            record["shard_offset"] = self.shard_offset
        return record

    @classmethod
    def from_json(cls, record: dict) -> VideoRecord:
        return cls(**record)

    def index_rows(self, shard: int, clip_frames: int) -> str:
        """The index.csv rows of this placed record in shard `shard`: one per clip of `clip_frames`."""
        buf = io.StringIO()
        rows = csv.writer(buf, lineterminator="\n")
        for start, offset in self.clips:
            times = self.times[offset : offset + clip_frames]
            rows.writerow(ClipRow(self.path, self.label, start, shard, self.shard_offset + offset,
                                  " ".join(f"{t:.6f}" for t in times)))
        return buf.getvalue()


@dataclass(frozen=True)
class ShardEntry:
    """A shard as meta.json lists it: its frame file (in `shards/`) and the frames it holds."""

    file: str
    frames: int

    def __post_init__(self) -> None:
        _require(self.file.endswith(".npy") and "/" not in self.file and "\\" not in self.file,
                 f"shard file {self.file!r} is not a .npy name")
        _require(self.frames >= 0, f"{self.file}: frames must be >= 0, got {self.frames}")

    def to_json(self) -> dict:
        return {"file": self.file, "frames": self.frames}

    @classmethod
    def from_json(cls, entry: dict) -> ShardEntry:
        return cls(**entry)


@dataclass(frozen=True)
class ShardRecords:
    """shards/shard-NNNNN.json: where a shard stands in the run and the placed records of its videos."""

    index: int
    first_video: int  # position of its first video among the sorted videos
    frames: int
    videos: list[VideoRecord]

    def __post_init__(self) -> None:
        name = shard_name(self.index, ".json")
        _require(min(self.index, self.first_video) >= 0, f"{name}: index and first_video must be >= 0")
        _require(all(v.shard_offset is not None for v in self.videos), f"{name}: a video record not placed")
        _require(sum(v.frames for v in self.videos) == self.frames,
                 f"{name}: its videos' frames do not add up to its {self.frames}")

    @property
    def entry(self) -> ShardEntry:
        return ShardEntry(shard_name(self.index, ".npy"), self.frames)

    @staticmethod
    def text(index: int, first_video: int, frames: int, video_texts: list[str]) -> str:
        """The file's text, `json.dumps(records, sort_keys=True)` and a newline, from its videos'
        placed records already serialised that way (as they were placed, while the decoders worked)."""
        head = json.dumps({"index": index, "file": shard_name(index, ".npy"), "first_video": first_video,
                           "frames": frames}, sort_keys=True)
        return f'{head[:-1]}, "videos": [{", ".join(video_texts)}]}}\n'  # "videos" sorts last

    @classmethod
    def from_json(cls, shard: dict) -> ShardRecords:
        records = cls(shard["index"], shard["first_video"], shard["frames"],
                      [VideoRecord.from_json(v) for v in shard["videos"]])
        _require(shard["file"] == records.entry.file,
                 f"shard {records.index} names its frames {shard['file']!r}, expected {records.entry.file!r}")
        return records


@dataclass(frozen=True)
class Counts:
    """meta.json `counts`: what the run found and made."""

    videos: int  # videos considered (after the split file)
    read: int  # decoded without error
    too_short: int  # read, but shorter than one clip
    skipped: int  # files left out
    clips: int
    frames_stored: int

    def __post_init__(self) -> None:
        _require(min(self.videos, self.read, self.too_short, self.skipped, self.clips, self.frames_stored) >= 0,
                 f"counts must be >= 0, got {self}")

    def to_json(self) -> dict:
        return {"videos": self.videos, "read": self.read, "too_short": self.too_short, "skipped": self.skipped,
                "clips": self.clips, "frames_stored": self.frames_stored}


@dataclass(frozen=True)
class Meta:
    """meta.json: what a finished folder holds and what made it."""

    fingerprint: str  # SHA-256 of the format, the dataset options, the classes and the source videos
    source: str  # the source folder, absolute
    options: dict  # PrepareOptions.dataset_options(): everything that shapes the data
    clip_shape: tuple[int, int, int, int]  # (T, S, S, 3)
    classes: list[str]  # index → name
    counts: Counts
    shards: list[ShardEntry]
    versions: dict  # of vidgan, numpy, PyAV, FFmpeg, decord

    def __post_init__(self) -> None:
        shape = tuple(self.clip_shape)
        _require(len(shape) == 4 and shape[0] >= 1 and shape[1] == shape[2] >= 1 and shape[3] == 3,
                 f"clip_shape {list(shape)} is not [T, S, S, 3]")

    def to_json(self) -> dict:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "source": self.source,
                "options": self.options, "clip_shape": list(self.clip_shape), "classes": self.classes,
                "counts": self.counts.to_json(), "shards": [s.to_json() for s in self.shards],
                "versions": self.versions}

    @classmethod
    def from_json(cls, meta: dict) -> Meta:
        """Read meta.json; a folder of another format is refused before anything else is read."""
        _require(meta.get("format") == FORMAT, f"format {meta.get('format')!r}, expected {FORMAT!r}")
        return cls(fingerprint=meta["fingerprint"], source=meta["source"],
                   options=meta["options"], clip_shape=tuple(meta["clip_shape"]), classes=meta["classes"],
                   counts=Counts(**meta["counts"]), shards=[ShardEntry.from_json(s) for s in meta["shards"]],
                   versions=meta["versions"])


@dataclass(frozen=True)
class Plan:
    """.work/plan.json: the fingerprint and decoder versions of an unfinished run. Read back only to
    be compared with a rerun's, so a field it lacks reads as None."""

    fingerprint: str | None
    options: dict | None
    versions: dict | None

    def to_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "options": self.options, "versions": self.versions}

    @classmethod
    def from_json(cls, plan: dict) -> Plan:
        return cls(plan.get("fingerprint"), plan.get("options"), plan.get("versions"))


def skipped_json(skipped: list[tuple[str, str]]) -> list[dict]:
    """skipped.json: every file left out, as `{"path", "reason"}`, sorted."""
    return [{"path": path, "reason": reason} for path, reason in sorted(skipped)]
