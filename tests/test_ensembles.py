"""Ensembles and soups of trained runs (`bertmtl ensemble`, `bertmtl soup`, `sweep --ensemble --soup`),
taken through the real commands: the mean of the members' answers, a soup's weights, the refusals,
the ONNX graph, the server and the TUI playground."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bertmtl.inference.predict import Predictor
from bertmtl.runs.checkpoint import load_checkpoint

from .conftest import REAL_PAIRS, cli, command

PAIR = ("the movie is very good", "a film that is great fun")


def _train(encoder, data_dir, out, *args):
    cli("train", "--encoder", encoder, "--data-dir", data_dir, "--out", out, "--max-steps", 3, "--eval-every", 3,
        "--batch-size", 8, "--lr", "1e-3", "--device", "cpu", "--precision", "fp32", *args)
    return out


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, data_dir, tmp_path_factory):
    """Two runs that share the heads' start (--init-seed 0) and differ in --seed."""
    root = tmp_path_factory.mktemp("members")
    return [_train(tiny_bert_dir, data_dir, root / f"seed{s}", "--seed", s, "--init-seed", 0) for s in (1, 2)]


def _json(*args) -> dict:
    return json.loads(command(*args, "--json", code=0, text=True).stdout)


def _constant_heads(source: Path, out: Path, sst: list[float], para: float, sts: float) -> Path:
    """A copy of checkpoint `source` whose heads answer the same for every input: sentiment
    probabilities `sst`, paraphrase probability `para`, similarity `sts`."""
    import shutil

    shutil.copytree(source, out)
    path = out / "multitask.safetensors"
    w = load_file(path)
    w["sst.weight"].zero_()
    w["sst.bias"] = torch.tensor(sst).log()
    for task in ("para", "sts"):
        for k in ("scale", "mlp.3.weight", "mlp.3.bias"):
            w[f"{task}.{k}"].zero_()
        w[f"{task}.bias"] = torch.tensor(0.0)
    w["para.bias"] = torch.tensor(math.log(para / (1 - para)))
    w["sts_calibration"] = torch.tensor([1.0, sts])
    save_file(w, path)
    return out


def test_an_ensemble_answers_the_mean_of_its_members_hand_computed(runs, tmp_path):
    a = _constant_heads(runs[0] / "best", tmp_path / "a", [0.1, 0.2, 0.3, 0.2, 0.2], 0.9, 1.0)
    b = _constant_heads(runs[1] / "best", tmp_path / "b", [0.1, 0.1, 0.1, 0.3, 0.4], 0.4, 4.0)
    cli("ensemble", a, b, "--out", tmp_path / "ens")
    got = _json("predict", "--checkpoint", tmp_path / "ens", *PAIR, "--precision", "fp32")
    for side in ("sentiment1", "sentiment2"):
        assert got[side]["probabilities"] == pytest.approx([0.1, 0.15, 0.2, 0.25, 0.3], abs=1e-6)
        assert got[side]["index"] == 4
    assert got["paraphrase_prob"] == pytest.approx(0.65, abs=1e-6) and got["is_paraphrase"] is True
    assert got["similarity"] == pytest.approx(2.5, abs=1e-4)


def test_an_ensemble_is_the_exact_mean_in_predict_evaluate_and_serve(runs, data_dir, tmp_path):
    out = command("ensemble", *runs, "--out", tmp_path / "ens", "--data-dir", data_dir, code=0, text=True)
    assert f"ensemble written to {tmp_path / 'ens'}" in out.stdout and "ensemble" in out.stdout  # and the dev table
    ens = tmp_path / "ens"
    # answers: the mean of the members' answers, exactly, at every task
    members = [Predictor(r, precision="fp32") for r in runs]
    p = Predictor(ens, precision="fp32")
    assert len(p.members) == 2 and "an ensemble of 2" in p.describe() and str(runs[0] / "best") in p.describe()
    texts = [x for pair in REAL_PAIRS[:6] for x in pair]
    with torch.inference_mode():
        pooled = [m._embed([e.ids for e in m.tokenizer.encode(texts)]) for m in members]
        both = p._embed([e.ids for e in p.tokenizer.encode(texts)])
        assert torch.equal(both, torch.cat(pooled, -1))
        for task in ("sst",):
            want = (members[0].model.answer(task, pooled[0]) + members[1].model.answer(task, pooled[1])) / 2
            assert torch.equal(p.model.answer(task, both), want)
        u, v = both[0::2], both[1::2]
        for task in ("para", "sts"):
            want = sum(m.model.answer(task, x[0::2], x[1::2]) for m, x in zip(members, pooled)) / 2
            assert torch.equal(p.model.answer(task, u, v), want)
    assert p.encode(texts[:3]).shape == (3, 2 * members[0].model.embedding_size)
    # evaluate scores it as the mean of its members' outputs, as `ensemble --data-dir` did
    saved = json.loads((ens / "metrics.json").read_text())
    got = _json("evaluate", "--checkpoint", ens, "--data-dir", data_dir)
    for key in ("sst_acc", "para_acc", "sts_corr", "overall"):
        assert got[key] == pytest.approx(saved[key], abs=1e-6), key
    # the server answers what predict answers, byte for byte
    from .test_serve import Server

    import httpx

    lines = "\n".join("\t".join(pair) for pair in REAL_PAIRS[:4]) + "\n"
    want = command("predict", "--checkpoint", ens, "-", "--precision", "fp32", input=lines, code=0, text=True).stdout
    server = Server(ens, "--precision", "fp32")
    try:
        r = httpx.post(f"{server.url}/predict", content=lines.encode(), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200 and r.text == want
        assert "X-Bertmtl-Step" not in r.headers  # an ensemble has no step of its own
        info = httpx.get(f"{server.url}/info").json()
        assert len(info["members"]) == 2 and info["embedding_size"] == 2 * members[0].model.embedding_size
    finally:
        assert server.stop() == 0
    assert any("an ensemble of 2" in line for line in server.lines)


def test_a_soup_of_a_run_with_itself_is_that_run(runs, tmp_path):
    cli("soup", runs[0], runs[0], "--out", tmp_path / "soup")
    ours, theirs = load_file(tmp_path / "soup" / "multitask.safetensors"), load_file(runs[0] / "best" / "multitask.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a = _json("predict", "--checkpoint", runs[0] / "best", *PAIR, "--precision", "fp32")
    b = _json("predict", "--checkpoint", tmp_path / "soup", *PAIR, "--precision", "fp32")
    assert a.pop("checkpoint") != b.pop("checkpoint") and a == b
    # the uniform soup of two is the mean of their weights
    cli("soup", *runs, "--out", tmp_path / "two")
    two, other = load_file(tmp_path / "two" / "multitask.safetensors"), load_file(runs[1] / "best" / "multitask.safetensors")
    assert torch.allclose(two["sst.weight"], (theirs["sst.weight"] + other["sst.weight"]) / 2, atol=1e-7)
    about = json.loads((tmp_path / "two" / "soup.json").read_text())
    assert about["members"] == [str((r / "best").resolve()) for r in runs] and about["greedy"] is False


def test_what_combines_but_not_as_meant_is_said(runs, tiny_bert_dir, data_dir, tmp_path):
    r = command("ensemble", runs[0], runs[0] / "best", "--out", tmp_path / "twice", code=0, text=True)
    assert f"note: {runs[0] / 'best'} is given twice" in r.stderr
    own = _train(tiny_bert_dir, data_dir, tmp_path / "own", "--seed", 5)  # heads from seed 5, not init seed 0
    r = command("soup", runs[0], own, "--out", tmp_path / "apart", code=0, text=True)
    assert "note: these runs' heads started from different initialisations (init seeds 0, 5)" in r.stderr
    assert "initialisations" not in command("soup", *runs, "--out", tmp_path / "close", code=0, text=True).stderr
    # --overwrite replaces an output, never the data the command reads
    import shutil

    shutil.copytree(data_dir, tmp_path / "data")
    r = command("ensemble", *runs, "--out", tmp_path / "data", "--overwrite", "--data-dir", tmp_path / "data", code=2,
                text=True)
    assert "which this command reads" in r.stderr and (tmp_path / "data" / "ids-sst-dev.csv").is_file()


def test_sigterm_leaves_nothing_behind(runs, data_dir, tmp_path):
    import signal
    import time

    from .conftest import spawn

    def left() -> list[str]:
        return [x.name for x in tmp_path.iterdir() if x.name.startswith(".")]

    # At once (before the command has begun: the default action, nothing made), and while it works:
    # its lock beside --out is held from the moment it claims the output until it is done.
    for at_work in (False, True):
        out = tmp_path / f"ens-{at_work}"
        p = spawn("ensemble", *runs, "--out", out, "--data-dir", data_dir)
        deadline = time.monotonic() + 120
        while at_work and not (tmp_path / f".{out.name}.lock").exists() and p.poll() is None:
            assert time.monotonic() < deadline, "the command never claimed its output"
            time.sleep(0.002)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        if at_work:
            assert p.returncode == 130 and b"stopped (SIGTERM): nothing was written" in err, err
        else:
            assert p.returncode in (130, -signal.SIGTERM), err
        assert not out.exists() and left() == [], left()


def test_the_greedy_soup_leaves_out_a_member_that_lowers_the_dev_score(runs, data_dir, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(runs[1] / "best", bad)
    w = load_file(bad / "multitask.safetensors")
    g = torch.Generator().manual_seed(0)
    for k, v in w.items():  # weights far from the others': averaging with them breaks the model
        if v.is_floating_point():
            w[k] = v + 3 * torch.randn(v.shape, generator=g)
    save_file(w, bad / "multitask.safetensors")
    r = command("soup", runs[0], bad, "--greedy", "--data-dir", data_dir, "--out", tmp_path / "greedy", code=0,
                text=True)
    assert f"the greedy soup kept 1 of 2: {runs[0] / 'best'}" in r.stdout
    kept = load_file(tmp_path / "greedy" / "multitask.safetensors")
    theirs = load_file(runs[0] / "best" / "multitask.safetensors")
    assert all(torch.equal(kept[k], theirs[k]) for k in kept)
    assert json.loads((tmp_path / "greedy" / "soup.json").read_text())["members"] == [str((runs[0] / "best").resolve())]


def test_incompatible_members_are_refused_with_one_line(runs, tiny_bert_dir, data_dir, tmp_path):
    sst_only = _train(tiny_bert_dir, data_dir, tmp_path / "sst-only", "--tasks", "sst")
    symmetric = _train(tiny_bert_dir, data_dir, tmp_path / "symmetric", "--pair-features", "symmetric")

    def refused(*args) -> str:
        r = command(*args, code=2, text=True)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()  # nothing written
        return lines[0]

    line = refused("ensemble", runs[0], sst_only, "--out", tmp_path / "out")
    assert f"{sst_only / 'best'} cannot be an ensemble member beside {runs[0] / 'best'}: its tasks are sst, not " \
           f"sst, para, sts" in line
    assert "heads are built with other options" in refused("soup", runs[0], symmetric, "--out", tmp_path / "out")
    assert "at least 2" in refused("ensemble", runs[0], "--out", tmp_path / "out")
    assert "--data-dir" in command("soup", *runs, "--greedy", "--out", tmp_path / "out", code=2, text=True).stderr
    cli("ensemble", *runs, "--out", tmp_path / "ens")
    assert "is an ensemble already" in refused("ensemble", tmp_path / "ens", runs[0], "--out", tmp_path / "out")
    assert "is an ensemble" in refused("train", "--encoder", tmp_path / "ens", "--data-dir", data_dir, "--out",
                                       tmp_path / "out")
    assert "no one encoder" in refused("export", tmp_path / "ens", "--format", "hf", "--out", tmp_path / "out")
    cli("ensemble", *runs, "--out", tmp_path / "ens", code=2)  # taken: --overwrite replaces it
    cli("ensemble", runs[1], runs[0], "--out", tmp_path / "ens", "--overwrite")
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["members"][0]["source"] == \
        str((runs[1] / "best").resolve())


def test_init_seed_starts_the_heads_alike_whatever_the_seed(tiny_bert_dir, data_dir, tmp_path):
    def heads(seed, *init):  # a learning rate of 1e-12: the weights are their initial ones to ~1e-10
        run = _train(tiny_bert_dir, data_dir, tmp_path / f"s{seed}{init}", "--seed", seed, "--lr", "1e-12", *init)
        return load_file(run / "best" / "multitask.safetensors")

    shared = [heads(s, "--init-seed", 7) for s in (1, 2)]
    own = [heads(s) for s in (1, 2)]
    for k in ("sst.weight", "para.mlp.0.weight"):
        assert (shared[0][k] - shared[1][k]).abs().max() < 1e-6
        assert (own[0][k] - own[1][k]).abs().max() > 1e-2
    same = heads(7, "--init-seed", 7), heads(7)  # --init-seed equal to --seed: the run it always was
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])


@pytest.mark.slow
def test_the_onnx_graph_of_an_ensemble_answers_what_its_predict_answers(runs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cli("ensemble", *runs, "--out", tmp_path / "ens")
    cli("export", tmp_path / "ens", "--format", "onnx", "--out", tmp_path / "onnx")
    card = (tmp_path / "onnx" / "README.md").read_text()
    assert card.count("# ens: ONNX graph (an ensemble of 2 encoders") == 1 and "the members' side by side" in card
    assert f"its members: `{runs[0].name}/best` (step 3" in card and f"`{runs[1].name}/best` (step 3" in card
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    p = Predictor(tmp_path / "ens", precision="fp32")
    pairs = REAL_PAIRS[:5]
    a, b = p.tokenizer([x for x, _ in pairs]), p.tokenizer([y for _, y in pairs])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {
        "input_ids_1": a.input_ids.numpy(), "attention_mask_1": a.attention_mask.numpy(),
        "input_ids_2": b.input_ids.numpy(), "attention_mask_2": b.attention_mask.numpy()})))
    lines = "\n".join("\t".join(pair) for pair in pairs) + "\n"
    answers = [json.loads(x) for x in command("predict", "--checkpoint", tmp_path / "ens", "-", "--precision", "fp32",
                                              input=lines, code=0, text=True).stdout.splitlines()]
    for i, ans in enumerate(answers):
        assert abs(ans["paraphrase_prob"] - got["paraphrase_prob"][i]) <= 1e-4
        assert abs(ans["similarity"] - got["similarity"][i]) <= 1e-4 + 5e-5
        assert max(abs(x - y) for x, y in zip(ans["sentiment1"]["probabilities"], got["sentiment1"][i])) <= 1e-4


@pytest.mark.slow
def test_a_sweep_builds_and_reports_each_configurations_ensemble_and_soups(tiny_bert_dir, data_dir, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {{data_dir: {data_dir}, encoder: {tiny_bert_dir}, max_steps: 3, batch_size: 8, lr: 1e-3, "
                    f"init_seed: 0, device: cpu, precision: fp32}}\ngrid: {{pair_features: [concat]}}\nseeds: 3\n")
    out = tmp_path / "sweep"
    r = command("sweep", spec, "--out", out, "--ensemble", "--soup", code=0, text=True)
    assert "combining seeds [42, 43, 44]" in r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    combined = {c["name"]: c for c in report["configurations"][0]["combined"]}
    names = list(combined)
    assert names[0] == "single runs, mean of 3" and names[1].startswith("best single run (seed ")
    assert names[2:] == ["ensemble of 2", "ensemble of 3", "uniform soup", "greedy soup"]
    assert combined["ensemble of 2"]["members"] == [42, 43]
    assert [combined[n]["passes"] for n in names[2:]] == [2, 3, 1, 1]
    for n in names[2:]:
        d = combined[n]["vs_singles"]
        assert d["lo"] <= d["diff"] <= d["hi"] and 0 <= d["p"] <= 1
    md = (out / "report.md").read_text()
    assert "## Ensembles and soups" in md and "| ensemble of 3 |" in md
    # the ensemble written is the one scored: `evaluate` gives its overall
    ens = Path(combined["ensemble of 3"]["checkpoint"])
    got = _json("evaluate", "--checkpoint", ens, "--data-dir", data_dir)
    assert got["overall"] == pytest.approx(combined["ensemble of 3"]["values"]["overall"], abs=1e-6)
    # a rebuilt report reads what was combined, without building it again
    again = command("sweep", "--report", out, "--ensemble", code=0, text=True)
    assert "already built" in again.stdout + again.stderr
    assert json.loads((out / "report.json").read_text())["configurations"][0]["combined"][2]["values"] == \
        combined["ensemble of 2"]["values"]


@pytest.mark.slow
def test_the_tui_playground_answers_with_an_ensemble(runs, tmp_path):
    from bertmtl.tui.app import BertmtlApp

    from .test_tui import POLL, drive, type_a_sentence

    cli("ensemble", *runs, "--out", tmp_path / "ens")
    app = BertmtlApp(runs[0], checkpoint=str(tmp_path / "ens"), poll_interval=POLL)

    async def scenario(pilot):
        sa, expected = await type_a_sentence(app, pilot, "the movie is very good")
        play = app.playground
        assert len(play.predictor.members) == 2 and "an ensemble of 2" in play.status
        members = [Predictor(r) for r in runs]
        want = [sum(m.sentence("the movie is very good")["sentiment"]["probabilities"][i] for m in members) / 2
                for i in range(5)]
        assert expected["probabilities"] == pytest.approx(want, abs=2e-6)  # each rounded to 6 places

    drive(app, scenario)
