"""scripts/push_to_hub.py: the published folder (release layout + Hub files + dataset metadata + model
card) from a real training run, its card, its training command, and the one-line refusals."""
import base64
import http.server
import io
import json
import os
import shlex
import threading

import pytest
import torch
import yaml

from conftest import lay_out_hf_cache, load_weights
from scripts import push_to_hub
from utils.hub import resolve_checkpoint

FILES = {"README.md", "all_config.yaml", "config.json", "checkpoint", "model.safetensors", "eval_metrics.jsonl",
         "dataset/train/dataset.json", "dataset/test/dataset.json", "dataset/identifiers.json"}


@pytest.fixture(scope="module")
def published(trained_hrm, tmp_path_factory):
    """``push_to_hub.py local_dir=`` of the tiny trained HRM's step_12: (folder, checkpoint folder, logged metrics)."""
    ck, logged = trained_hrm
    out = tmp_path_factory.mktemp("published") / "me-tiny"
    push_to_hub.main([f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny", f"local_dir={out}"])
    return out, ck, logged


def front_matter(card: str):
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_folder_holds_release_layout_hub_files_and_dataset_metadata(published, sudoku4):
    out, ck, _ = published
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == FILES
    assert (out / "all_config.yaml").read_text() == (ck / "all_config.yaml").read_text()
    assert json.loads((out / "config.json").read_text()) == yaml.safe_load((ck / "all_config.yaml").read_text())
    for rel in ("train/dataset.json", "test/dataset.json", "identifiers.json"):
        assert (out / "dataset" / rel).read_bytes() == (sudoku4 / rel).read_bytes()


def test_safetensors_and_checkpoint_hold_the_same_tensors(published):
    from safetensors.torch import load_file

    out, ck, _ = published
    release, hub, trained = load_weights(out / "checkpoint"), load_file(out / "model.safetensors"), load_weights(ck / "step_12")
    assert all(k.startswith("_orig_mod.") for k in release)  # the original releases' (compiled) key names
    assert {k[len("_orig_mod."):] for k in release} == set(hub) == set(trained)
    for k, v in trained.items():
        assert torch.equal(hub[k], v) and torch.equal(release["_orig_mod." + k], v) and hub[k].dtype == v.dtype


def test_every_file_has_the_same_mode(published):
    """0666 less the umask, as any file the user writes: safetensors alone would make its file owner-only."""
    import os
    out, _, _ = published
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~mask}, modes


@pytest.mark.parametrize("arch_name, family, paper, absent", [
    ("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "hierarchical-reasoning-model", "2506.21734", ("2510.04871", "2512.14693")),
    ("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", "tiny-recursive-model", "2510.04871", ("2512.14693",)),
    ("urm.urm@URM", "universal-reasoning-model", "2512.14693", ("2506.21734", "2510.04871", "Hierarchical")),
])
def test_card_names_the_model_family_and_its_paper(published, arch_name, family, paper, absent):
    """The card of a URM (or TRM) run describes, tags and cites that model; model-index holds only
    evaluation metrics, never the train/* averages logged beside them."""
    out, ck, _ = published
    config = yaml.safe_load((ck / "all_config.yaml").read_text())
    config["arch"]["name"] = arch_name
    metrics = {"all/exact_accuracy": 0.5, "all/accuracy": 0.75, "train/accuracy": 0.9, "train/exact_accuracy": 0.4}
    info = dict(config=config, task="sudoku", metrics=metrics, step=12, data_paths=["data/sudoku-4x4"], seq_len=16,
                weights={"w": torch.zeros(3)})
    meta, body = front_matter(push_to_hub.model_card("me/m", info))
    tag = family.split("-")[0][0] + "rm"  # hrm / trm / urm
    assert family in meta["tags"] and tag in meta["tags"]
    assert f"https://arxiv.org/abs/{paper}" in body and not any(a in body for a in absent)
    title = " ".join(w.capitalize() for w in family.split("-"))  # Universal Reasoning Model, ...
    assert f"A {title} ({tag.upper()}, `{arch_name}`" in body
    results = meta["model-index"][0]["results"]
    names = {m["name"] for r in results for m in r["metrics"]}
    assert names == {"all/exact_accuracy", "all/accuracy"}
    assert "train/accuracy" not in body


def test_model_card_is_yaml_front_matter_plus_markdown(published):
    from huggingface_hub import ModelCard

    out, _, logged = published
    text = (out / "README.md").read_text()
    meta, body = front_matter(text)
    assert meta["library_name"] == "hrm-trm" and {"hrm", "sudoku", "reasoning"} <= set(meta["tags"])
    card = ModelCard(text)  # huggingface_hub's own parser: the Hub reads the same fields
    assert card.data.library_name == "hrm-trm"
    scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert scores["all/exact_accuracy"] == pytest.approx(logged[12]["exact_accuracy"], abs=1e-6)
    assert scores["all/accuracy"] == pytest.approx(logged[12]["accuracy"], abs=1e-6)
    assert "# hrm-tiny" in body and "step 12" in body
    assert "python predict.py checkpoint=hf://me/hrm-tiny task=sudoku" in body
    assert "python evaluate.py checkpoint=hf://me/hrm-tiny data_path=" in body
    assert "https://arxiv.org/abs/2506.21734" in body


def test_training_command_composes_to_the_run_config(published):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import REPO
    from training.config import parse_config

    out, ck, _ = published
    body = front_matter((out / "README.md").read_text())[1]
    command = next(line for line in body.splitlines() if line.startswith("python pretrain.py "))
    overrides = shlex.split(command)[2:]
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        composed = OmegaConf.to_container(compose("cfg_pretrain", overrides=overrides), resolve=True)
    rebuilt = parse_config(composed).model_dump()
    saved = yaml.safe_load((ck / "all_config.yaml").read_text())
    names = {"checkpoint_path", "project_name", "run_name"}
    assert {k: v for k, v in rebuilt.items() if k not in names} == {k: v for k, v in saved.items() if k not in names}


def test_published_folder_resolves_through_the_hub_cache(published, hf_cache):
    from safetensors.torch import load_file

    out, ck, _ = published
    snapshot = lay_out_hf_cache(hf_cache, "me/hrm-tiny", {"": out})
    path = resolve_checkpoint("hf://me/hrm-tiny")
    assert path == str(snapshot / "model.safetensors")
    assert all(torch.equal(v, load_weights(ck / "step_12")[k]) for k, v in load_file(path).items())
    assert resolve_checkpoint("hf://me/hrm-tiny/checkpoint") == str(snapshot / "checkpoint")


def test_help_answers(capsys):
    push_to_hub.main(["--help"])
    assert "repo_id=<owner>/<name>" in capsys.readouterr().out


def error_line(capsys, argv):
    with pytest.raises(SystemExit) as e:
        push_to_hub.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_refusals_are_one_line_and_write_nothing(trained_hrm, hf_cache, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    ck, _ = trained_hrm
    args = [f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny"]
    assert "HF_HUB_OFFLINE=1 forbids uploading" in error_line(capsys, args)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert "no Hugging Face token; run `hf auth login` or set HF_TOKEN" in error_line(capsys, args)
    assert "expected <owner>/<name>" in error_line(capsys, [f"checkpoint={ck}/step_12", "repo_id=me/x@v1", f"local_dir={tmp_path / 'a'}"])
    assert "a folder; give its weights file" in error_line(capsys, [f"checkpoint={ck}", "repo_id=me/x", f"local_dir={tmp_path / 'a'}"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    assert "exists and is not an empty folder" in error_line(capsys, [*args, f"local_dir={tmp_path / 'full'}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "hf_home"]  # no temporary folder left behind


def test_dataset_elsewhere_needs_data_path(trained_hrm, sudoku4, tmp_path, capsys):
    ck, _ = trained_hrm
    run = tmp_path / "run"
    run.mkdir()
    (run / "all_config.yaml").write_text((ck / "all_config.yaml").read_text().replace(str(sudoku4), "data/moved-away"))
    (run / "step_12").write_bytes((ck / "step_12").read_bytes())
    args = [f"checkpoint={run}/step_12", "repo_id=me/x", f"local_dir={tmp_path / 'out'}"]
    err = error_line(capsys, args)
    assert "data/moved-away/train/dataset.json: missing" in err and "give data_path=<the dataset folder>" in err
    push_to_hub.main([*args, f"data_path={sudoku4}"])
    assert (tmp_path / "out" / "dataset" / "identifiers.json").read_bytes() == (sudoku4 / "identifiers.json").read_bytes()
    assert not (tmp_path / "out" / "eval_metrics.jsonl").exists()  # this folder logged none
    assert "## Evaluation" not in (tmp_path / "out" / "README.md").read_text()


# ---- uploading, to a local stand-in for the Hub's API ------------------------------------------


class FakeHubAPI(http.server.BaseHTTPRequestHandler):
    """The Hub's repository creation, pre-upload and commit endpoints: every file goes in the commit
    itself ("regular" upload), which the stand-in records; ``fail`` answers a status instead."""

    commits: list = []
    fail: dict = {}  # path prefix -> status

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0]
        status = next((s for prefix, s in self.fail.items() if path.startswith(prefix)), 200)
        if status != 200:
            return self.answer(status, {"error": "stand-in", "errors": [{"message": "stand-in refuses this"}]})
        if path == "/api/validate-yaml":  # the model card's metadata, checked before the commit
            return self.answer(200, {"errors": [], "warnings": []})
        if path == "/api/repos/create":
            request = json.loads(body)
            return self.answer(200, {"url": f"http://{self.headers['Host']}/{request.get('organization')}/{request['name']}"})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return self.answer(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            self.commits.append({e["value"]["path"]: base64.b64decode(e["value"]["content"]) for e in lines if e["key"] == "file"})
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return self.answer(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
        return self.answer(404, {"error": f"stand-in has no {path}"})

    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(hf_cache, monkeypatch):
    from huggingface_hub import constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_TOKEN", "hf_stand_in_token")
    monkeypatch.setattr(FakeHubAPI, "commits", [])
    monkeypatch.setattr(FakeHubAPI, "fail", {})
    yield FakeHubAPI
    server.shutdown()
    server.server_close()


def test_upload_is_one_commit_of_the_published_files(published, fake_hub, capsys):
    out, ck, _ = published
    push_to_hub.main([f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny", "private=true"])
    assert "uploaded step_12 to http://" in capsys.readouterr().out
    (commit,) = fake_hub.commits
    assert set(commit) == FILES
    for rel in FILES - {"checkpoint"}:  # torch.save's archive is not byte-stable across processes; its tensors are
        assert commit[rel] == (out / rel).read_bytes(), rel
    assert torch.load(io.BytesIO(commit["checkpoint"]), weights_only=True).keys() == load_weights(out / "checkpoint").keys()


def test_refused_upload_is_one_line_and_commits_nothing(trained_hrm, fake_hub, capsys):
    ck, _ = trained_hrm
    fake_hub.fail = {"/api/models/me/hrm-tiny/commit": 403}
    err = error_line(capsys, [f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny"])
    assert "the Hub refused (403): the token cannot write there; nothing was uploaded" in err and not fake_hub.commits
    fake_hub.fail = {"/api/repos/create": 500}
    assert "the Hub answered 500" in error_line(capsys, [f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny"])
    fake_hub.fail = {"/api/validate-yaml": 400}
    err = error_line(capsys, [f"checkpoint={ck}/step_12", "repo_id=me/hrm-tiny"])
    assert "the Hub refused the model card's metadata (stand-in refuses this); nothing was uploaded" in err and not fake_hub.commits


def test_local_dir_edge_cases_are_one_line_and_leave_nothing(trained_hrm, tmp_path, capsys, monkeypatch):
    """A link (to a folder, or dangling), the current folder, an unwritable parent, a mount point
    and a full disk: one line each, nothing written, no temporary folder left."""
    import subprocess
    ck, _ = trained_hrm
    args = [f"checkpoint={ck}/step_12", "repo_id=me/x"]
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "link")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    monkeypatch.chdir(tmp_path / "empty")
    for local_dir, message in ((tmp_path / "link", "a symbolic link"), (tmp_path / "dangling", "a symbolic link"),
                               (".", "the current folder"), (tmp_path, "exists and is not an empty folder"),
                               ("/proc/release", "local_dir=/proc/release: cannot write in /proc")):
        assert message in error_line(capsys, [*args, f"local_dir={local_dir}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "empty", "link"] and not os.listdir(tmp_path / "empty")
    if os.geteuid() != 0:
        return  # the mount point and the full disk need a tmpfs, which only root can mount
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        assert "a mount point, which cannot be replaced" in error_line(capsys, [*args, f"local_dir={mnt}"])
        err = error_line(capsys, [*args, f"local_dir={mnt / 'release'}"])
        assert f"local_dir={mnt / 'release'}: cannot write the folder (No space left on device); nothing was written" in err
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)  # busy if the failed write had left a file open
