"""Find the videos under a source folder, label them, and filter them by a UCF-101 split file.

Videos are recognised by their first bytes (container signatures), not only by their extension, so a
`.avi` full of random bytes is still reported (and skipped with a reason) while `classInd.txt` or
a JPEG next to the videos is silently ignored. An animated GIF is a video (datasets such as TGIF are
made of them); a still GIF is then a video shorter than one clip, counted as such.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Extensions that mark a file as meant to be a video, whatever its content turns out to be.
VIDEO_EXTENSIONS = frozenset(
    "avi mp4 m4v mov qt mkv webm flv f4v wmv asf mpg mpeg mpe m1v m2v vob ts mts m2ts 3gp 3g2 ogv "
    "mxf y4m ivf h264 264 h265 265 hevc dv rm rmvb divx xvid nut gif".split()
)

# ISO-BMFF brands that are still images, not videos (HEIF / AVIF photos share the `ftyp` box).
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis"})


def sniff_container(head: bytes) -> str | None:
    """Name of the video container whose signature starts `head`, or None."""
    # One test per container, each its own magic bytes: alike in shape, different in what they read.
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4/mov"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "mpeg-ps"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpeg-ts"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "asf"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:9] == b"YUV4MPEG2":
        return "y4m"
    if head[:4] == b"DKIF":
        return "ivf"
    if head[:4] == b".RMF":
        return "realmedia"
    if head[:8] == b"nut/mult":
        return "nut"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def looks_like_video(path: Path) -> bool:
    """True when `path` has a video extension or starts with a video container signature. Only
    regular files are read: opening a named pipe would wait for a writer that never comes."""
    if path.suffix.lower().lstrip(".") in VIDEO_EXTENSIONS:
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return sniff_container(head) is not None


@dataclass(frozen=True)
class VideoEntry:
    """One source video: where it is (relative to SRC, POSIX separators) and its class."""

    rel_path: str
    label: int
    size: int  # bytes on disk, part of the resume fingerprint

    def __post_init__(self) -> None:
        if self.label < 0:
            raise ValueError(f"label must be >= 0, got {self.label} for {self.rel_path}")


@dataclass
class Discovery:
    """What a walk of SRC found: the labelled videos, the classes, and what was left out and why."""

    videos: list[VideoEntry]
    classes: list[str]
    excluded: list[tuple[str, str]]  # (rel_path, reason) for files or split entries not used
    files_seen: int = 0  # files under SRC, videos or not


def _walk_files(src: Path, unreadable: list[OSError]) -> list[Path]:
    """Every non-hidden file under `src`, following symlinked folders once (no loops); the folders
    that cannot be listed go to `unreadable`."""
    found = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(src, followlinks=True, onerror=unreadable.append):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                found.append(Path(root) / name)
    return found


def read_split_file(split_file: Path) -> tuple[list[str], list[str] | None]:
    """Entries of a UCF-101 `trainlist0N.txt` / `testlist0N.txt`, and the classes of `classInd.txt`.

    Entries are relative paths (`Class/v_Class_gGG_cCC.avi`), optionally followed by a 1-based class
    index, which is ignored: labels come from `classInd.txt` when it lies beside the split file.
    """
    entries = []
    for line in split_file.read_text(encoding="utf-8-sig").splitlines():  # Notepad writes a BOM
        line = line.strip()
        if line:
            entries.append(line.split()[0].replace("\\", "/"))
    class_ind = split_file.parent / "classInd.txt"
    classes = None
    if class_ind.is_file():
        numbered = []
        for line in class_ind.read_text(encoding="utf-8-sig").splitlines():
            parts = line.split()
            if len(parts) == 2:
                numbered.append((int(parts[0]), parts[1]))
        classes = [name for _, name in sorted(numbered)]
    return entries, classes


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as lone surrogates
        return False


def _printable_path(name: str) -> str:
    """`name` with the bytes that are not UTF-8 written as `\\xNN`: safe in JSON and on a terminal."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def discover(src: Path, split_file: Path | None = None) -> Discovery:
    """Walk `src` recursively and label every video by its first-level subfolder.

    A flat folder (videos directly in SRC, none in subfolders) is a single class named after SRC.
    With `split_file`, only the listed videos are kept (names compared case-insensitively, as UCF-101's
    lists and folders disagree in case), and `classInd.txt` beside it fixes the class order.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    unreadable: list[OSError] = []
    files = _walk_files(src, unreadable)
    candidates = [p for p in files if looks_like_video(p)]
    rel = [p.relative_to(src).as_posix() for p in candidates]
    excluded: list[tuple[str, str]] = [  # its videos would be missing without a word
        (_printable_path(Path(e.filename or src).relative_to(src).as_posix()) + "/",
         f"folder unreadable ({e.strerror or e})") for e in unreadable]
    named = [_is_utf8(r) for r in rel]  # the index, the records and the skipped list are UTF-8 text
    excluded += [(_printable_path(r), "its name is not valid UTF-8: rename it (e.g. with convmv)")
                 for r, ok in zip(rel, named) if not ok]
    candidates = [p for p, ok in zip(candidates, named) if ok]
    rel = [r for r, ok in zip(rel, named) if ok]
    nested = any("/" in r for r in rel)

    split_classes = None
    if split_file is not None:
        entries, split_classes = read_split_file(Path(split_file))
        wanted = {e.lower() for e in entries}
        wanted_names = {e.rsplit("/", 1)[-1].lower() for e in entries if "/" not in e}
        present = {r.lower() for r in rel}
        present_names = {r.rsplit("/", 1)[-1].lower() for r in rel}
        for e in entries:
            if e.lower() not in present and ("/" in e or e.lower() not in present_names):
                excluded.append((e, "listed in the split file but not found under SRC"))
        keep = [r.lower() in wanted or r.rsplit("/", 1)[-1].lower() in wanted_names for r in rel]
        candidates = [p for p, k in zip(candidates, keep) if k]
        rel = [r for r, k in zip(rel, keep) if k]

    def class_of(r: str) -> str | None:
        if not nested:
            return src.resolve().name or "video"
        return r.split("/", 1)[0] if "/" in r else None

    if split_classes is not None:
        classes = split_classes
    else:
        classes = sorted({c for c in map(class_of, rel) if c is not None})
    lookup = {c.lower(): i for i, c in enumerate(classes)}

    videos = []
    for path, r in zip(candidates, rel):
        name = class_of(r)
        if name is None:
            excluded.append((r, "video directly in SRC while other videos are in class folders"))
            continue
        if name.lower() not in lookup:
            excluded.append((r, f"class folder {name!r} is not listed in classInd.txt"))
            continue
        try:
            size = path.stat().st_size
        except OSError:
            size = -1  # unreadable: kept, so that the run reports it with the reason
        videos.append(VideoEntry(r, lookup[name.lower()], size))
    videos.sort(key=lambda v: v.rel_path)
    return Discovery(videos=videos, classes=classes, excluded=excluded, files_seen=len(files))
