"""The one reader of the YAML and JSON files people write (configuration/file.py read_file): `--config FILE`,
a sweep's spec and `--tasks-file` each refuse, in one line with exit code 2, a file that is not
UTF-8 and a key given twice; one rule for the format (.json is JSON, anything else YAML)."""

from __future__ import annotations


import pytest

from bertmtl.configuration.file import read_file
from bertmtl.errors import UserError

from .conftest import cli

UTF16 = "lr: 1e-4\n".encode("utf-16")  # what Windows' Notepad once saved as "Unicode": starts \xff\xfe


def _one_line_error(r, message: str) -> None:
    """A UserError as users see it: exit 2 (asserted by cli), one line, no traceback."""
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    assert r.output.splitlines() == [f"Error: {message}"], r.output


# -- the three readers, through the real command ------------------------------------------------

def test_config_file_not_utf8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(UTF16)
    r = cli("train", "--config", path, code=2)
    _one_line_error(r, f"--config {path}: not UTF-8 text (byte 0xff at offset 0, line 1; it looks like UTF-16; "
                       f"save it as UTF-8)")


@pytest.mark.parametrize("name, text, line, first", [
    ("c.yaml", "lr: 1e-4\nbatch-size: 8\nlr: 2e-4\n", 3, 1),
    ("c.json", '{"lr": 1e-4,\n "batch_size": 8,\n "lr": 2e-4}', 3, 1),
])
def test_config_file_duplicate_key(tmp_path, name, text, line, first):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    r = cli("train", "--config", path, "--print-config", code=2)
    _one_line_error(r, f"--config {path}: duplicate key 'lr' on line {line} (first on line {first}); "
                       f"each key may be given once")


def test_sweep_spec_not_utf8(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"base: {}\ngrid: {combine: [sum]}\nname: caf\xe9\n")  # Latin-1
    r = cli("sweep", path, "--out", tmp_path / "out", code=2)
    _one_line_error(r, f"sweep spec {path}: not UTF-8 text (byte 0xe9 at offset 41, line 3; save it as UTF-8)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text, key, line, first", [
    # nested: without the check the last value (not an option) would win and be the only complaint
    ("s.yaml", "base: {}\ngrid:\n  combine: [sum]\n  combine: [bogus]\n", "combine", 4, 3),
    ("s.json", '{"base": {},\n "grid": {"combine": ["sum"]},\n "base": {"lr": -1}}', "base", 3, 1),
])
def test_sweep_spec_duplicate_key(tmp_path, name, text, key, line, first):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    r = cli("sweep", path, "--out", tmp_path / "out", code=2)
    _one_line_error(r, f"sweep spec {path}: duplicate key {key!r} on line {line} (first on line {first}); "
                       f"each key may be given once")
    assert not (tmp_path / "out").exists()


def test_tasks_file_not_utf8(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"- name: stars\n  kind: classification\n  train: \xff.csv\n")
    r = cli("train", "--tasks-file", path, "--out", tmp_path / "run", code=2)
    _one_line_error(r, f"--tasks-file {path}: not UTF-8 text (byte 0xff at offset 46, line 3; save it as UTF-8)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, text, line", [
    ("t.yaml", "- name: stars\n  kind: classification\n  train: a.csv\n  name: sst\n", 4),
    ("t.json", '[{"name": "stars", "kind": "classification", "train": "a.csv",\n  "name": "sst"}]', 2),
])
def test_tasks_file_duplicate_key(tmp_path, name, text, line):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    r = cli("train", "--tasks-file", path, "--out", tmp_path / "run", code=2)
    _one_line_error(r, f"--tasks-file {path}: duplicate key 'name' on line {line} (first on line 1); "
                       f"each key may be given once")
    assert not (tmp_path / "run").exists()


def test_tasks_file_named_otherwise_is_yaml(tmp_path):
    """The one rule: anything but .json is YAML (a tasks file once read every name but .yaml/.yml as JSON)."""
    path = tmp_path / "tasks.txt"
    path.write_text("- name: stars\n  kind: classification\n  train: missing.csv\n", encoding="utf-8")
    r = cli("train", "--tasks-file", path, "--out", tmp_path / "run", code=2)
    assert "not valid" not in r.output and "missing.csv" in r.output, r.output


# -- the reader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, raw, message", [
    ("c.yaml", b"lr: [1\n", "not valid YAML (line 2, column 1: while parsing a flow sequence: expected ',' or ']', "
                            "but got '<stream end>')"),
    ("c.yaml", b"a: b: c\n", "not valid YAML (line 1, column 5: mapping values are not allowed here)"),
    ("c.yaml", b"!!python/object/apply:os.system [echo]\n",
     "not valid YAML (line 1, column 1: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system')"),
    ("c.json", b'{"a": 1,}', "not valid JSON (line 1, column 9: Expecting property name enclosed in double quotes)"),
    ("c.json", b"a: 1\n", "not valid JSON (line 1, column 1: Expecting value)"),  # .json is JSON
    ("c.json", b"[" * 100_000, "not valid JSON (nested too deeply)"),
    ("c.yaml", b"a: 1\nb: caf\xc3\n", "not UTF-8 text (byte 0xc3 at offset 11, line 2; save it as UTF-8)"),
    ("c.json", '{"a": 1}'.encode("utf-32"), "not UTF-8 text (byte 0xff at offset 0, line 1; it looks like UTF-32; "
                                            "save it as UTF-8)"),
    ("c.yaml", b"a:\n  b:\n    c: 1\n    d: 2\n    c: 3\n", "duplicate key 'c' on line 5 (first on line 3); "
                                                          "each key may be given once"),
    ("c.yaml", b"- {x: 1}\n- {y: 1, y: 2}\n", "duplicate key 'y' on line 2 (first on line 2); "
                                               "each key may be given once"),
    ("c.yaml", b"1: a\n1.0: b\n", "duplicate key 1.0 on line 2 (first on line 1); each key may be given once"),
    # a key spelt with an escape is the same key; an "x" in a string or in a nested object is not
    # the first key given twice in reading order, though json's hook meets the inner object's first
    ("c.json", b'{"a": 1,\n "a": {"x": 1, "x": 2}}', "duplicate key 'a' on line 2 (first on line 1); "
                                                     "each key may be given once"),
    ("c.json", b'{"x": {"x": 1, "s": "\\"x\\": {"},\n "\\u0078": 2}', "duplicate key 'x' on line 2 (first on line 1); "
                                                                    "each key may be given once"),
])
def test_reader_refuses_with_one_line(tmp_path, name, raw, message):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(UserError) as e:
        read_file(path, f"--config {name}")
    assert e.value.message == f"--config {name}: {message}"


def test_reader_cannot_read(tmp_path):
    for path, why in ((tmp_path / "nowhere.yaml", "No such file or directory"), (tmp_path, "Is a directory")):
        with pytest.raises(UserError) as e:
            read_file(path, "sweep spec x")
        assert e.value.message == f"sweep spec x: cannot read it ({why})"


@pytest.mark.parametrize("name, raw, data", [
    ("c.yaml", b"", None),
    ("c.yaml", b"# nothing yet\n", None),
    ("c.json", b"  \n", None),
    ("c.yaml", b"\xef\xbb\xbflr: 1.0e-4\n", {"lr": 1e-4}),  # a UTF-8 byte-order mark is still UTF-8
    ("c.yml", b'{"lr": 1, "tasks": ["sst"]}', {"lr": 1, "tasks": ["sst"]}),  # JSON text is YAML too
    ("c.txt", b"lr: 1\n", {"lr": 1}),
    ("c.JSON", b'{"a": {"b": [1, {"b": 2}]}, "b": 3}', {"a": {"b": [1, {"b": 2}]}, "b": 3}),
    # a merge key's values may be overridden: that is what it is for, not a key given twice
    ("c.yaml", b"base: &b {lr: 1, seed: 2}\nrun: {<<: *b, lr: 3}\n", {"base": {"lr": 1, "seed": 2},
                                                                      "run": {"lr": 3, "seed": 2}}),
])
def test_reader_reads(tmp_path, name, raw, data):
    path = tmp_path / name
    path.write_bytes(raw)
    assert read_file(path, "x") == data


def test_merges_through_nested_anchors_are_no_duplicates(tmp_path):
    """PyYAML flattens a merged mapping in place, possibly before that mapping is itself built: the
    check sees each mapping's own keys, so it refuses nothing that yaml.safe_load reads."""
    import yaml

    raw = "a: &a {k: 1}\nx:\n  b: &b {<<: *a, k: 2}\ny: {<<: *b, j: 0}\nz: {<<: [*a, *b], k: 5}\n"
    path = tmp_path / "c.yaml"
    path.write_text(raw, encoding="utf-8")
    assert read_file(path, "x") == yaml.safe_load(raw)
