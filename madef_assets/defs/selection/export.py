"""Writing the SFT set as a LLaMA-Factory dataset folder: staged first, published only after the
contamination gate passed, withdrawn when it blocks."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

DATASET_NAME = "madef_sft"
DATASET_INFO = "dataset_info.json"
MANIFEST = "madef_manifest.json"  # which sft_dataset content the folder holds, and a hash of each file
CARD = "README.md"  # the dataset card (Hugging Face form)
LICENSES = "licenses.csv"  # every source with its license and rows contributed
DATA_DIR = "data"  # the Parquet rows the card's `configs` point at


def write_llamafactory_dataset(
    rows: Sequence[Mapping[str, str]], folder: Path, formats: tuple[str, ...]
) -> dict[str, Path]:
    """alpaca JSON (instruction/input/output) and/or sharegpt JSON (conversations) of the rows, with the
    dataset_info.json that registers them for LLaMA-Factory (`dataset: madef_sft`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    info: dict[str, dict] = {}
    records = [{k: row[k] for k in ("instruction", "input", "output")} for row in rows]
    for fmt in formats:
        name = DATASET_NAME if fmt == "alpaca" else f"{DATASET_NAME}_{fmt}"
        path = folder / f"{name}.json"
        if fmt == "alpaca":
            payload = records
            info[name] = {
                "file_name": path.name,
                "formatting": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output"},
            }
        elif fmt == "sharegpt":
            payload = [
                {
                    "conversations": [
                        {"from": "human", "value": "\n\n".join(filter(None, (r["instruction"], r["input"])))},
                        {"from": "gpt", "value": r["output"]},
                    ]
                }
                for r in records
            ]
            info[name] = {
                "file_name": path.name,
                "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
            }
        else:
            raise ValueError(f"unknown SFT export format {fmt!r}: alpaca or sharegpt")
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        written[fmt] = path
    (folder / DATASET_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return written


# --- staging, publishing, withdrawing -------------------------------------------------------------
# The folder LLaMA-Factory trains on (method.sft_export_dir) only ever holds a set whose contamination
# gate passed: sft_dataset writes a hidden staging folder next to it, and the sft_dataset_folder asset
# (which Dagster runs only when the blocking gate passed) moves it into place. A blocked sft_dataset
# removes the staging folder and withdraws whatever an earlier run published.


def staging_dir(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.staging"


def _owned(name: str) -> bool:
    """Files madef writes into the dataset folder (and so may replace or remove)."""
    return name in (DATASET_INFO, MANIFEST, CARD, LICENSES, DATA_DIR) or (
        name.startswith(DATASET_NAME) and name.endswith(".json")
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_llamafactory_dataset(
    rows: Sequence[Mapping[str, str]],
    folder: Path,
    formats: tuple[str, ...],
    sft_version: str,
    attachments: Mapping[str, bytes] | None = None,
    notes: Mapping | None = None,
) -> dict[str, Path]:
    """Write the dataset into the staging folder of `folder` (replacing any earlier staging), with the
    attachments (relative path → bytes: card, licenses, Parquet) and a manifest naming the sft_dataset content
    version, every file's hash (by relative path) and the `notes` (e.g. the combined license terms)."""
    staging = staging_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)
    written = write_llamafactory_dataset(rows, staging, formats)
    for name, content in (attachments or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    files_version = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    manifest = {
        "sft_version": sft_version,
        "files_version": files_version,
        "rows": len(rows),
        "formats": list(formats),
        "files": files,
        **(notes or {}),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return {fmt: folder / path.name for fmt, path in written.items()}


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a ready folder (dataset_info.json present, every listed file with its hash), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    for name, digest in manifest.get("files", {}).items():
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            return None
    return manifest if (folder / DATASET_INFO).is_file() else None


def publish_staged(folder: Path, sft_version: str) -> dict:
    """Move the staged folder into `folder` and return its manifest. Refuses when nothing is staged, when
    the staged content is not `sft_version` (the current sft_dataset), or when `folder` holds files madef
    did not write."""
    staging = staging_dir(folder)
    manifest = read_manifest(staging)
    if manifest is None and not staging.exists():
        published = read_manifest(folder)
        if published is not None and published["sft_version"] == sft_version:
            return published  # already published (a re-run of the publishing step alone)
    if manifest is None:
        raise FileNotFoundError(
            f"no complete staged SFT folder at {staging}: the last sft_dataset run did not pass its "
            "contamination gate (or did not finish); materialize sft_dataset again"
        )
    if manifest["sft_version"] != sft_version:
        raise ValueError(
            f"the staged SFT folder holds sft_dataset version {manifest['sft_version']}, the table is at "
            f"{sft_version}: materialize sft_dataset again"
        )
    foreign = sorted(p.name for p in folder.iterdir() if not _owned(p.name)) if folder.is_dir() else []
    if foreign:
        raise ValueError(f"refusing to replace {folder}: it holds files madef did not write: {foreign[:5]}")
    previous = folder.parent / f".{folder.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return manifest


def withdraw_dataset(folder: Path) -> list[str]:
    """Remove the staging folder and madef's files from `folder` (dataset_info.json first, so the folder
    stops being loadable at once); the folder itself goes too when nothing else is left in it."""
    shutil.rmtree(staging_dir(folder), ignore_errors=True)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for name in [DATASET_INFO, MANIFEST, *sorted(p.name for p in folder.iterdir() if _owned(p.name))]:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists():
            path.unlink()
            removed.append(name)
    if not any(folder.iterdir()):
        folder.rmdir()
    return removed


class ExportRefused(ValueError):
    """Why `madef export` wrote nothing (a clear message for the command line, no traceback)."""


# A manifest file name: folders and a file separated by "/", each a plain name (no "..", no hidden name, no
# backslash, NUL, space or other character a hostile manifest could use to reach outside the destination).
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COPY_CHUNK = 1 << 20
_RENAME_NOREPLACE = 1  # linux/fs.h
# The exported set's modes, whatever the umask (a umask of 0 would make every file writable by everyone).
FILE_MODE = 0o644
FOLDER_MODE = 0o755
MAX_MANIFEST_BYTES = 8 << 20  # a manifest lists a few files with their hashes: a few KB
_AT_FDCWD = -100


def manifest_name_parts(name: object) -> tuple[str, ...]:
    """The path parts of a file name the manifest lists; ExportRefused for anything but a plain relative name."""
    parts = tuple(name.split("/")) if isinstance(name, str) else ()
    if not parts or not all(_NAME_PART.fullmatch(part) for part in parts):
        raise ExportRefused(
            f"refusing to export: the manifest lists {name!r}, which is not a plain relative file name "
            "(letters, digits, '.', '_', '-'; folders separated by '/'; no '..', no absolute path)"
        )
    return parts


def _open_beneath(root_fd: int, parts: Sequence[str], flags: int, create_folders: bool = False) -> int:
    """Open parts[-1] inside the folders parts[:-1] under the open folder root_fd, following no symlink on the
    way (each folder is opened O_NOFOLLOW, relative to the one before); create missing folders when asked."""
    folder_fd = root_fd
    try:
        for part in parts[:-1]:
            if create_folders:
                try:
                    os.mkdir(part, FOLDER_MODE, dir_fd=folder_fd)
                except FileExistsError:
                    pass  # made for an earlier file of the same folder; opened O_NOFOLLOW below
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder_fd)
            if folder_fd != root_fd:
                os.close(folder_fd)
            folder_fd = next_fd
            if create_folders:
                os.fchmod(folder_fd, FOLDER_MODE)  # the mode given to mkdir is narrowed by the umask, or widened
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=folder_fd)
    finally:
        if folder_fd != root_fd:
            os.close(folder_fd)


def _open_source(root_fd: int, name: str) -> int:
    """A read descriptor of a regular file of the published folder; ExportRefused for a symlink (the file or a
    folder on its way), a missing file or anything else that is not a regular file."""
    try:
        fd = _open_beneath(root_fd, manifest_name_parts(name), os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ExportRefused(
                f"refusing to export {name}: it or a folder on its way is a symlink (or a file stands where a "
                "folder should)"
            ) from None
        raise ExportRefused(f"cannot read {name} from the published SFT set: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ExportRefused(f"refusing to export {name}: it is not a regular file")
    if info.st_nlink > 1:
        # a hard link is the same file as one elsewhere (outside the set, perhaps): madef never writes one
        os.close(fd)
        raise ExportRefused(f"refusing to export {name}: it has {info.st_nlink} hard links (madef writes none)")
    return fd


def _read_export_manifest(root_fd: int, folder: Path) -> dict:
    """The manifest of the published folder, checked for shape; ExportRefused when there is none."""
    try:
        fd = _open_source(root_fd, MANIFEST)
    except ExportRefused as exc:
        raise ExportRefused(
            f"no complete published SFT set at {folder} ({exc}): run `madef run` (sft_dataset_folder) first"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        content = handle.read(MAX_MANIFEST_BYTES + 1)
        if len(content) > MAX_MANIFEST_BYTES:
            raise ExportRefused(
                f"the manifest {folder / MANIFEST} is over {MAX_MANIFEST_BYTES:,} bytes: not a manifest madef wrote"
            )
        try:
            manifest = json.loads(content)
        except ValueError as exc:
            raise ExportRefused(f"the manifest {folder / MANIFEST} is not valid JSON: {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        raise ExportRefused(f"the manifest {folder / MANIFEST} has no 'files' map of name to sha256")
    if DATASET_INFO not in files or MANIFEST in files:
        raise ExportRefused(f"the manifest {folder / MANIFEST} does not describe a published SFT set")
    return manifest


def _copy_checked(root_fd: int, staging_fd: int, name: str, digest: str | None) -> None:
    """Copy one file into the staging folder (created O_EXCL, never through a symlink), checking its sha256
    against the manifest's as it streams."""
    source = _open_source(root_fd, name)
    try:
        target = _open_beneath(
            staging_fd, manifest_name_parts(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, create_folders=True
        )
    except OSError as exc:
        os.close(source)
        raise ExportRefused(f"cannot write {name} into the new folder: {exc.strerror}") from None
    hasher = hashlib.sha256()
    with os.fdopen(source, "rb") as reader, os.fdopen(target, "wb") as writer:
        while chunk := reader.read(_COPY_CHUNK):
            hasher.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fchmod(writer.fileno(), FILE_MODE)  # the mode given to open is narrowed by the umask, or widened
        os.fsync(writer.fileno())
    if digest is not None and hasher.hexdigest() != digest:
        raise ExportRefused(f"{name} changed since the set was published (its sha256 differs from the manifest's)")


def _refuse_existing(destination: Path) -> None:
    if destination.is_symlink():
        raise ExportRefused(f"refusing to export to {destination}: it is a symlink; give a path that does not exist")
    if destination.is_dir():
        kind = "a folder that is not empty" if any(destination.iterdir()) else "an existing (empty) folder"
        raise ExportRefused(
            f"refusing to export to {destination}: it is {kind}; export creates a new folder (an existing one may "
            "belong to someone else), so give a path that does not exist"
        )
    if os.path.lexists(destination):
        raise ExportRefused(f"refusing to export to {destination}: it is an existing file")
    if not destination.parent.is_dir():
        raise ExportRefused(
            f"refusing to export to {destination}: its parent {destination.parent} is not an existing folder"
        )


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename source to target unless target exists (as anything, a symlink included): renameat2 with
    RENAME_NOREPLACE, so a path planted between a check and the rename is never replaced or followed. On a file
    system without that flag, a check then a plain rename (which also never follows a symlink at target)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        status = libc.renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if status == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(error, os.strerror(error), str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


def _write_new_folder(root_fd: int, files: Mapping[str, str], destination: Path) -> None:
    """Copy the listed files and the manifest into a fresh private folder beside `destination` (mkdtemp), then
    rename it onto `destination` unless something is there by then; on any failure remove it again."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=".madef-export.", dir=destination.parent))
    except OSError as exc:
        raise ExportRefused(f"cannot create a folder in {destination.parent}: {exc.strerror}") from None
    try:
        staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for name, digest in [*files.items(), (MANIFEST, None)]:
                _copy_checked(root_fd, staging_fd, name, digest)
            os.fchmod(staging_fd, FOLDER_MODE)  # mkdtemp made it private; the set is for sharing
        finally:
            os.close(staging_fd)
        rename_noreplace(staging, destination)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, FileExistsError):
            raise ExportRefused(f"refusing to export to {destination}: something was created there meanwhile") from None
        if isinstance(exc, OSError):
            raise ExportRefused(f"cannot export to {destination}: {exc}") from None
        raise


def export_published(folder: Path, destination: Path) -> list[str]:
    """Copy a published set (every file its manifest lists, and the manifest) into a new folder `destination`,
    for sharing; return the names copied. The files are written into a fresh sibling folder through no symlink,
    checked against the manifest's hashes, and that folder is renamed onto `destination` only if nothing is there
    by then. Raises ExportRefused, writing nothing, for a folder that is not a complete published set, a manifest
    name that is not a plain relative name, a symlink or special file in the set, and a destination that exists
    (file, symlink, or folder, empty or not: another user may own an empty one) or whose parent folder does not.
    Files (hard links included) and a manifest over MAX_MANIFEST_BYTES are refused too; files are written 0644 and
    folders 0755 whatever the umask. The destination's parent folders are the caller's to choose: a symlink among
    them is followed like any path the user types (only the destination itself must not exist)."""
    destination = Path(os.path.abspath(destination))
    try:
        root_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ExportRefused(
            f"no complete published SFT set at {folder} ({exc.strerror}): run `madef run` (sft_dataset_folder) first"
        ) from None
    try:
        manifest = _read_export_manifest(root_fd, folder)
        for name in manifest["files"]:
            manifest_name_parts(name)
        _refuse_existing(destination)
        _write_new_folder(root_fd, manifest["files"], destination)
    finally:
        os.close(root_fd)
    return [*manifest["files"], MANIFEST]
