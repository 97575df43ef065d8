"""`madef export --to`: the published SFT set goes into a new folder, written through no symlink, from a manifest
whose names all stay inside it; every refusal is a clear error (exit code 2) that leaves the disk as it was."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from madef_assets.cli import main
from madef_assets.defs.selection.export import (
    MANIFEST,
    ExportRefused,
    export_published,
    manifest_name_parts,
    rename_noreplace,
)
from madef_assets.project import PROJECT_ROOT
from madef_assets_tests.test_sft_card import publish

VICTIM_TEXT = "the victim's own file\n"


@pytest.fixture
def published(tmp_path, monkeypatch) -> Path:
    """A published SFT set at <tmp>/sft and a profile <tmp>/p.yaml pointing at it."""
    folder = tmp_path / "sft"
    publish(folder, {"s_eval": "CC-BY-NC-SA-4.0", "general_sft": "CC-BY-NC-4.0"})
    raw = yaml.safe_load((PROJECT_ROOT / "config/demo.yaml").read_text(encoding="utf-8"))
    raw["method"]["sft_export_dir"] = str(folder)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("MADEF_STATE_DIR", str(tmp_path / "state"))
    return folder


def export_cli(tmp_path: Path, to: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["export", "--to", str(to), "--profile", str(tmp_path / "p.yaml")])
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root, never following a symlink: its kind, mode and content (or link target)."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                entries[str(path.relative_to(root))] = ("file", info.st_mode, path.read_bytes())
            else:
                entries[str(path.relative_to(root))] = ("other", info.st_mode)
    return entries


def test_export_writes_a_new_folder_with_the_published_files(tmp_path, published, capsys):
    target = tmp_path / "share"
    code, err = export_cli(tmp_path, target, capsys)
    assert code == 0 and err == ""
    manifest = json.loads((target / MANIFEST).read_bytes())
    copied = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert copied == set(manifest["files"]) | {MANIFEST} and "dataset_info.json" in copied
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((target / name).read_bytes()).hexdigest() == digest
        assert not (target / name).is_symlink()
    assert (target / MANIFEST).read_bytes() == (published / MANIFEST).read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "sft", "share"]  # no staging folder left


def plant_empty_folder(tmp_path: Path, to: Path) -> None:
    to.mkdir()


def plant_file(tmp_path: Path, to: Path) -> None:
    to.write_text(VICTIM_TEXT)


def plant_non_empty_folder(tmp_path: Path, to: Path) -> None:
    to.mkdir()
    (to / "notes.txt").write_text(VICTIM_TEXT)


def plant_symlink_to_folder(tmp_path: Path, to: Path) -> None:
    (tmp_path / "victim").mkdir()
    to.symlink_to(tmp_path / "victim")


def plant_symlink_to_file(tmp_path: Path, to: Path) -> None:
    (tmp_path / "victim.txt").write_text(VICTIM_TEXT)
    to.symlink_to(tmp_path / "victim.txt")


def plant_dangling_symlink(tmp_path: Path, to: Path) -> None:
    to.symlink_to(tmp_path / "created_by_the_victim")


def plant_symlinks_in_an_empty_looking_folder(tmp_path: Path, to: Path) -> None:
    """Another user pre-creates the folder and plants a link where export would write the card."""
    (tmp_path / "victim.txt").write_text(VICTIM_TEXT)
    to.mkdir()
    (to / "README.md").symlink_to(tmp_path / "victim.txt")


@pytest.mark.parametrize(
    "plant, reason",
    [
        (plant_empty_folder, "it is an existing (empty) folder"),
        (plant_file, "it is an existing file"),
        (plant_non_empty_folder, "it is a folder that is not empty"),
        (plant_symlink_to_folder, "it is a symlink"),
        (plant_symlink_to_file, "it is a symlink"),
        (plant_dangling_symlink, "it is a symlink"),
        (plant_symlinks_in_an_empty_looking_folder, "it is a folder that is not empty"),
    ],
)
def test_an_existing_destination_is_refused_and_nothing_is_written(tmp_path, published, capsys, plant, reason):
    target = tmp_path / "share"
    plant(tmp_path, target)
    before = snapshot(tmp_path)
    code, err = export_cli(tmp_path, target, capsys)
    assert code == 2 and f"refusing to export to {target}: {reason}" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before  # the victim's files, the planted links, no staging folder left


def test_a_destination_under_a_missing_folder_is_refused(tmp_path, published, capsys):
    before = snapshot(tmp_path)
    code, err = export_cli(tmp_path, tmp_path / "absent" / "share", capsys)
    assert code == 2 and "absent is not an existing folder" in err and snapshot(tmp_path) == before


def add_to_manifest(folder: Path, name: str, target: Path) -> None:
    """List `name` in the manifest with the sha256 of `target`, as a hostile manifest pointing outside would."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"][name] = hashlib.sha256(target.read_bytes()).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    "name",
    [
        "../outside.txt",
        "data/../../outside.txt",
        "{outside}",  # absolute
        "/etc/passwd",
        "data\\..\\..\\outside.txt",
        "",
        ".hidden",
        "./README.md",
        "data//README.md",
        "data/",
        "READ\x00ME.md",
        "README.md\n",
        "data/ README.md",
    ],
)
def test_a_manifest_name_outside_the_folder_is_refused(tmp_path, published, capsys, name):
    outside = tmp_path / "outside.txt"
    outside.write_text(VICTIM_TEXT)
    add_to_manifest(published, name.format(outside=outside), outside)
    before = snapshot(tmp_path)
    with pytest.raises(ExportRefused, match="not a plain relative file name"):
        export_published(published, tmp_path / "share")
    assert snapshot(tmp_path) == before
    code, err = export_cli(tmp_path, tmp_path / "elsewhere" / "share", capsys)  # also before any destination check
    assert code == 2 and "not a plain relative file name" in err and snapshot(tmp_path) == before


def test_plain_manifest_names_are_accepted():
    assert manifest_name_parts("data/train-00000-of-00001.parquet") == ("data", "train-00000-of-00001.parquet")
    assert manifest_name_parts("madef_sft_sharegpt.json") == ("madef_sft_sharegpt.json",)
    for bad in (None, 3, "a/b/", "..", "a/./b"):
        with pytest.raises(ExportRefused):
            manifest_name_parts(bad)


def replace_with_symlink(path: Path, elsewhere: Path) -> None:
    """Move path (file or folder) to elsewhere and leave a symlink to it: same content, same hashes."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    path.rename(elsewhere)
    path.symlink_to(elsewhere)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("README.md", "refusing to export README.md: it or a folder on its way is a symlink"),
        ("data", "refusing to export data/train-00000-of-00001.parquet: it or a folder on its way is a symlink"),
        (MANIFEST, "no complete published SFT set"),
    ],
)
def test_a_symlink_in_the_published_folder_is_refused(tmp_path, published, capsys, name, reason):
    replace_with_symlink(published / name, tmp_path / "elsewhere" / name)
    before = snapshot(tmp_path)
    code, err = export_cli(tmp_path, tmp_path / "share", capsys)
    assert code == 2 and reason in err and snapshot(tmp_path) == before


def test_a_fifo_or_a_changed_file_in_the_published_folder_is_refused(tmp_path, published):
    (published / "licenses.csv").unlink()
    os.mkfifo(published / "licenses.csv")  # opening it to read would block for ever
    before = snapshot(tmp_path)
    with pytest.raises(ExportRefused, match="licenses.csv: it is not a regular file"):
        export_published(published, tmp_path / "share")
    assert snapshot(tmp_path) == before
    (published / "licenses.csv").unlink()
    (published / "licenses.csv").write_text("source,license,rows\nforged,MIT,1\n")
    with pytest.raises(ExportRefused, match="licenses.csv changed since the set was published"):
        export_published(published, tmp_path / "share")
    assert snapshot(tmp_path) == {**before, "sft/licenses.csv": snapshot(tmp_path)["sft/licenses.csv"]}


@pytest.mark.parametrize("planted", ["symlink", "empty folder", "file"])
def test_the_final_rename_never_replaces_what_appeared_meanwhile(tmp_path, planted):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "README.md").write_text("card")
    target = tmp_path / "share"
    (tmp_path / "victim.txt").write_text(VICTIM_TEXT)
    {
        "symlink": lambda: target.symlink_to(tmp_path / "victim.txt"),
        "empty folder": target.mkdir,
        "file": lambda: target.write_text(VICTIM_TEXT),
    }[planted]()
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError):
        rename_noreplace(staged, target)
    assert snapshot(tmp_path) == before
    rename_noreplace(staged, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "README.md").read_text() == "card" and not staged.exists()


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_the_exported_modes_do_not_depend_on_the_umask(tmp_path, published, umask):
    previous = os.umask(umask)
    try:
        export_published(published, tmp_path / "share")
    finally:
        os.umask(previous)
    entries = [tmp_path / "share", *(tmp_path / "share").rglob("*")]
    assert any(p.is_dir() for p in entries[1:]) and any(p.is_file() for p in entries)  # data/ and its files
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in entries}
    assert modes == {name: 0o755 if (tmp_path / name).is_dir() else 0o644 for name in modes}


@pytest.mark.parametrize("name", ["licenses.csv", "data/train-00000-of-00001.parquet", MANIFEST])
def test_a_hard_link_in_the_published_folder_is_refused(tmp_path, published, name):
    outside = tmp_path / "outside" / "secret"
    outside.parent.mkdir()
    (published / name).rename(outside)  # same content, same hash: only the link count tells
    os.link(outside, published / name)
    before = snapshot(tmp_path)
    with pytest.raises(ExportRefused, match="2 hard links"):
        export_published(published, tmp_path / "share")
    assert snapshot(tmp_path) == before


def test_an_oversized_manifest_is_refused_without_reading_it_whole(tmp_path, published):
    manifest = json.loads((published / MANIFEST).read_bytes())
    manifest["padding"] = "x" * (9 << 20)
    (published / MANIFEST).write_text(json.dumps(manifest))
    before = snapshot(tmp_path)
    with pytest.raises(ExportRefused, match=r"madef_manifest.json is over [0-9,]+ bytes"):
        export_published(published, tmp_path / "share")
    assert snapshot(tmp_path) == before
