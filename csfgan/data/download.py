"""Downloading, verifying and safely extracting the real datasets' source files.

Guarantees:

- **Atomic**: a file at its final name is complete and its MD5 verified; anything else is either a
  ``<name>.part`` (an interrupted download, resumed with an HTTP ``Range`` request next time) or a
  ``<name>.bad-md5`` (a complete file whose checksum was wrong, moved aside and never extracted).
- **Fails fast**: every connection has a socket timeout (30 s by default), so a machine without
  network stops with a :class:`DataSourceError` naming the URL instead of hanging.
- **Safe extraction**: every member is checked before anything is written (absolute paths, ``..``,
  links leaving the archive and device files are refused), the archive is read to its end (so a
  truncated archive is detected first), then extracted with the tarfile ``data`` filter into a
  temporary sibling directory that is renamed into place only when complete.

Mirrors: pass ``urls={"CUB_200_2011.tgz": "https://mirror/..."}``; the MD5 stays the official one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from csfgan.errors import UserError
from csfgan.io import remove_stale_temporaries, replace_dir, temporary_dir
from csfgan.lock import output_lock

DEFAULT_TIMEOUT = 30.0  # seconds; socket connect and per-read timeout
CHUNK = 1 << 20
USER_AGENT = "csfgan-downloader/0.1 (python urllib)"
EXTRACTED_DIR = "extracted"  # <downloads>/extracted/<archive stem>/
MARKER = ".csfgan-extracted.json"


class DataSourceError(UserError, RuntimeError):
    """A real dataset's source file is missing, corrupt, unreachable or unsafe; the message says
    which file, why, and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name in the downloads directory
    url: str
    md5: str
    archive: bool = False  # a tar archive to extract after download


_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"

DATASET_FILES: dict[str, list[RemoteFile]] = {
    "cub": [
        RemoteFile(
            "CUB_200_2011.tgz",
            "https://data.caltech.edu/records/65de6-vzc40/files/CUB_200_2011.tgz",
            "97eceeb196236b17998738112f37df78",
            archive=True,
        ),
    ],
    "oxford102": [
        RemoteFile("102flowers.tgz", f"{_FLOWERS}/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", archive=True),
        RemoteFile("imagelabels.mat", f"{_FLOWERS}/imagelabels.mat", "e0620be6f572b9609742df49c70aed4d"),
        RemoteFile("setid.mat", f"{_FLOWERS}/setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"),
    ],
}


# --------------------------------------------------------------------------------------------
# Checksums


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def bad_md5_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".bad-md5")


def verify_md5(path: Path, md5: str, *, dest: Path | None = None, source: str | None = None) -> str:
    """Check ``path`` against ``md5``; on mismatch move it aside to ``<dest or path>.bad-md5`` and raise.

    ``dest`` names the file the user knows (a download's final name while ``path`` is its ``.part``)
    and ``source`` the URL it came from, for the message.
    """
    path = Path(path)
    shown = Path(dest) if dest is not None else path
    actual = md5sum(path)
    if actual != md5.lower():
        bad = bad_md5_path(shown)
        os.replace(path, bad)
        origin = f" (downloaded from {source})" if source else ""
        raise DataSourceError(
            f"{shown}{origin}: MD5 {actual} does not match the expected {md5}; the file is corrupt or "
            f"not the official one. It was moved aside to {bad} and not extracted: delete it and "
            f"download again (or use a mirror that serves the official file)."
        )
    return actual


# --------------------------------------------------------------------------------------------
# Downloading


def _network_error(url: str, dest: Path, exc: BaseException) -> DataSourceError:
    reason = getattr(exc, "reason", exc)
    return DataSourceError(
        f"cannot download {url}: {reason}. Check the network connection (this machine may have no "
        f"internet access), or download the file elsewhere and put it at {dest}, or pass a mirror URL."
    )


def _fetch(url: str, dest: Path, *, timeout: float, progress: bool) -> bool:
    """Append the rest of ``url`` to ``dest.part`` (resuming at its size); False if the range was refused."""
    part, label = _part(dest), dest.name
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return False
        raise DataSourceError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}. The file may have moved: pass a "
            f"mirror URL, or download it by hand and put it at {dest}."
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _network_error(url, dest, exc) from exc

    with response:
        # file:// and servers without range support answer with the whole file: start over.
        resumed = offset > 0 and getattr(response, "status", None) == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        try:
            with (
                open(part, "ab" if resumed else "wb") as fh,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    disable=None if progress else True,  # a bar on a terminal only
                    leave=False,
                ) as bar,
            ):
                while block := response.read(CHUNK):
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
                fh.flush()
                os.fsync(fh.fileno())
        except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, IncompleteRead
            raise DataSourceError(
                f"download of {url} was interrupted after {received} bytes ({exc}); the partial file "
                f"{part} is kept: run the download again to resume it."
            ) from exc
    if total is not None and received < total:
        raise DataSourceError(
            f"download of {url} stopped after {received} of {total} bytes; the partial file {part} "
            f"is kept: run the download again to resume it."
        )
    return True


def download_file(url: str, dest: Path, md5: str, *, timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; return ``dest``.

    If ``dest`` already exists and verifies, nothing is downloaded. An existing ``dest.part`` is
    resumed with an HTTP Range request (a server that ignores the range restarts from zero). The
    file appears at ``dest`` only once complete and verified; a checksum mismatch leaves it at
    ``dest.bad-md5``; an interrupted transfer leaves ``dest.part`` for the next call to resume.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if md5sum(dest) == md5.lower():
            return dest
        bad = bad_md5_path(dest)
        os.replace(dest, bad)
        tqdm.write(f"{dest}: MD5 mismatch, moved aside to {bad}; downloading again")
    part = _part(dest)
    if not _fetch(url, dest, timeout=timeout, progress=progress):
        # The server refused the range (416): the .part may already be complete; if it does not
        # verify, start over from zero once.
        if md5sum(part) != md5.lower():
            part.unlink()
            _fetch(url, dest, timeout=timeout, progress=progress)

    if not part.is_file():
        raise DataSourceError(f"download of {url} produced no file at {part}")
    verify_md5(part, md5, dest=dest, source=url)
    os.replace(part, dest)
    return dest


def dataset_files(
    dataset: str, urls: dict[str, str] | None = None, md5s: dict[str, str] | None = None
) -> list[RemoteFile]:
    """The dataset's source files, with URL (mirror) and MD5 overrides applied by file name."""
    if dataset not in DATASET_FILES:
        raise DataSourceError(f"no download for dataset {dataset!r}; downloadable: {', '.join(sorted(DATASET_FILES))}")
    files = DATASET_FILES[dataset]
    names = {f.name for f in files}
    for what, override in (("URL", urls), ("MD5", md5s)):
        unknown = sorted(set(override or {}) - names)
        if unknown:
            raise DataSourceError(
                f"{what} override for unknown file(s) {unknown} of dataset {dataset!r}; its files are {sorted(names)}"
            )
    urls, md5s = urls or {}, md5s or {}
    return [RemoteFile(f.name, urls.get(f.name, f.url), md5s.get(f.name, f.md5).lower(), f.archive) for f in files]


def extraction_dir(downloads_dir: Path, archive_name: str) -> Path:
    """Where an archive from the downloads folder is extracted: ``<downloads>/extracted/<stem>``."""
    stem = archive_name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return Path(downloads_dir) / EXTRACTED_DIR / stem


def download_dataset(
    dataset: str,
    out_dir: Path,
    urls: dict[str, str] | None = None,
    *,
    md5s: dict[str, str] | None = None,
    extract: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> dict[str, Path]:
    """Download (resumably), verify and, for archives, safely extract ``dataset``'s source files.

    Returns ``{file name: path}`` of the verified files. ``urls`` / ``md5s`` override single files by
    name (mirrors; tests). The caption archives are not downloaded (see ``reed_captions``).
    """
    out_dir = Path(out_dir)
    result: dict[str, Path] = {}
    for f in dataset_files(dataset, urls, md5s):
        path = download_file(f.url, out_dir / f.name, f.md5, timeout=timeout, progress=progress)
        if extract and f.archive:
            extract_archive(path, extraction_dir(out_dir, f.name), md5=f.md5)
        result[f.name] = path
    return result


# --------------------------------------------------------------------------------------------
# Safe extraction


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "has '..' in its path"
    if member.isdev() or member.isfifo():
        return "is a device or FIFO file"
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            return f"is a link to the absolute path {member.linkname!r}"
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a link pointing outside the archive ({member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        return "is not a regular file, directory or link"
    return None


def _read_marker(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    md5: str | None = None,
    include: Callable[[str], bool] | None = None,
) -> Path:
    """Safely extract the tar archive ``archive`` into the directory ``dest``; return ``dest``.

    ``dest`` appears only when extraction is complete (with a marker recording the archive's MD5);
    if it already exists with a marker for the same MD5 it is reused. ``include`` selects members by
    name (their parent directories are created as needed). Unsafe members, truncated or corrupt
    archives raise :class:`DataSourceError` before anything reaches ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataSourceError(f"{archive}: archive not found")
    if dest.exists():
        marker = _read_marker(dest)
        if marker is None:
            raise DataSourceError(
                f"{dest} exists but was not made by csfgan's extraction (no {MARKER}): delete it so "
                f"{archive.name} can be extracted there"
            )
        if md5 is None or marker.get("md5") == md5:
            return dest
    digest = md5 or md5sum(archive)

    def corrupt(exc: BaseException) -> DataSourceError:
        return DataSourceError(
            f"{archive}: archive is truncated or corrupt ({type(exc).__name__}: {exc}); nothing was "
            f"extracted. Delete it and download it again."
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(dest, f"extract {archive}"):
        remove_stale_temporaries(dest.parent, (dest.name,))
        _extract_locked(archive, dest, digest, include, corrupt)
    return dest


def _extract_locked(archive: Path, dest: Path, digest: str, include, corrupt) -> None:
    tmp = temporary_dir(dest)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                # First pass: read every header to the end of the archive (detects truncation) and
                # vet every member before a single byte is written.
                members = tar.getmembers()
                for m in members:
                    reason = _unsafe_reason(m)
                    if reason:
                        raise DataSourceError(
                            f"{archive}: member {m.name!r} {reason}; refusing to extract this archive "
                            f"(nothing was extracted)"
                        )
                selected = [m for m in members if include is None or include(m.name)]
                tar.extractall(tmp, members=selected, filter="data")
        except DataSourceError:
            raise
        except tarfile.FilterError as exc:
            raise DataSourceError(f"{archive}: unsafe member refused ({exc}); nothing was extracted") from exc
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise corrupt(exc) from exc
        (tmp / MARKER).write_text(json.dumps({"archive": archive.name, "md5": digest}) + "\n")
        replace_dir(tmp, dest)  # a stale extraction (other MD5) made by us is swapped out
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require_sources(
    dataset: str, downloads_dir: Path, md5s: dict[str, str] | None = None
) -> dict[str, tuple[Path, str]]:
    """The dataset's verified source files in ``downloads_dir``: ``{name: (path, md5)}``.

    A missing file stops with a message naming it, its URL and the download command; a file with
    the wrong MD5 is moved aside to ``<name>.bad-md5`` (see :func:`verify_md5`).
    """
    downloads_dir = Path(downloads_dir)
    found: dict[str, tuple[Path, str]] = {}
    for f in dataset_files(dataset, md5s=md5s):
        path = downloads_dir / f.name
        if not path.is_file():
            raise DataSourceError(
                f"{f.name} not found in {downloads_dir}: run `csfgan download --dataset {dataset} --out "
                f"{downloads_dir}`, or download {f.url} (MD5 {f.md5}) by hand and put it at {path}"
            )
        found[f.name] = (path, verify_md5(path, f.md5))
    return found
