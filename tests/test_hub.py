"""hf:// checkpoints (utils/hub.py) resolved by huggingface_hub itself, against a Hugging Face cache
the tests lay out (``models--owner--name/refs/<rev>``, ``snapshots/<sha>/...``, ``blobs/``) with
HF_HUB_OFFLINE=1, and against a local stand-in for the Hub's HTTP answers (missing, private, gated
repositories; an unreachable Hub); then predict.py, evaluate.py and pretrain.py reading them, and
checkpoints that answer without their dataset (inference/checkpoint.py)."""
import http.server
import json
import shutil
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import HF_TEST_COMMIT as SHA, free_port, lay_out_hf_cache as lay_out_cache, load_weights
from utils.hub import HubError, HubRef, parse_hub_uri, pick_weights_file, resolve_checkpoint

# ---- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, ref", [
    ("hf://sapientinc/HRM-checkpoint-sudoku-extreme", HubRef("sapientinc/HRM-checkpoint-sudoku-extreme")),
    ("hf://me/run@v1", HubRef("me/run", "v1")),
    ("hf://me/run@main/step_100", HubRef("me/run", "main", "step_100")),
    ("hf://me/run/sub/checkpoint", HubRef("me/run", None, "sub/checkpoint")),
    ("hf://me/run@refs/pr/3/checkpoint", HubRef("me/run", "refs/pr/3", "checkpoint")),
    ("hf://me/run@feature%2Fx/", HubRef("me/run", "feature/x")),
])
def test_parse(uri, ref):
    assert parse_hub_uri(uri) == ref
    assert parse_hub_uri(ref.uri) == ref


@pytest.mark.parametrize("uri, says", [
    ("hf://justone", "expected hf://owner/name"),
    ("hf://me/run@", "empty revision"),
    ("hf://me/bad--name", "not a valid Hub name"),
    ("hf://datasets/me/data", "model repositories"),
    ("hf://me/run/../x", "not a path inside"),
    ("hf://me/run@refs/heads", "refs/pr/N"),
    ("hf://me/good@%2e%2e%2f%2e%2e/checkpoint", "revision '../..' is not a branch, tag or commit name"),  # out of the cache
    ("hf://me/good@.hidden", "is not a branch, tag or commit name"),
])
def test_parse_errors_are_one_line(uri, says):
    with pytest.raises(HubError) as e:
        parse_hub_uri(uri, "checkpoint")
    assert says in str(e.value) and str(e.value).startswith(f"checkpoint={uri}:") and "\n" not in str(e.value)


def test_weights_file_found_without_naming_it():
    assert pick_weights_file(["README.md", "all_config.yaml", "checkpoint", "model.safetensors"], "hf://a/b") == "model.safetensors"
    assert pick_weights_file(["all_config.yaml", "checkpoint", "hrm_act_v1.py"], "hf://a/b") == "checkpoint"
    assert pick_weights_file(["all_config.yaml", "step_52080", "step_52080_all_preds.0"], "hf://a/b") == "step_52080"
    with pytest.raises(HubError, match=r"holds 2 weights files \(step_6, step_12\); name one, e.g. hf://a/b/step_12"):
        pick_weights_file(["step_12", "step_6", "all_config.yaml"], "hf://a/b")
    with pytest.raises(HubError, match="no weights file"):
        pick_weights_file(["all_config.yaml", "sub/checkpoint"], "hf://a/b")


# ---- offline, through the cache ----------------------------------------------------------------


def test_resolves_from_the_cache_offline(hf_cache, tmp_path):
    files = {"all_config.yaml": b"arch: {}\n", "checkpoint": b"release weights", "model.safetensors": b"same weights",
             "dataset/train/dataset.json": b"{}", "README.md": b"card"}
    snapshot = lay_out_cache(hf_cache, "owner/name", files)
    path = resolve_checkpoint("hf://owner/name")
    assert path == str(snapshot / "model.safetensors") and Path(path).read_bytes() == b"same weights"
    assert (Path(path).parent / "all_config.yaml").read_text() == "arch: {}\n"  # beside it, as in a run folder
    assert resolve_checkpoint("hf://owner/name@main/checkpoint") == str(snapshot / "checkpoint")
    assert resolve_checkpoint(f"hf://owner/name@{SHA}/checkpoint") == str(snapshot / "checkpoint")


def test_offline_errors_are_one_line(hf_cache):
    lay_out_cache(hf_cache, "owner/release", {"all_config.yaml": b"arch: {}\n", "checkpoint": b"w"})
    with pytest.raises(HubError) as e:
        resolve_checkpoint("hf://owner/missing")
    text = str(e.value)
    assert text.startswith("checkpoint=hf://owner/missing: not in the local Hugging Face cache") and "HF_HUB_OFFLINE=1" in text
    assert str(hf_cache) in text and "\n" not in text
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1"):
        resolve_checkpoint("hf://owner/release@v2")  # a revision never downloaded
    with pytest.raises(HubError, match=r"its cached copy has no file 'step_9' \(it holds all_config.yaml, checkpoint\)"):
        resolve_checkpoint("hf://owner/release/step_9")


# ---- online answers, from a local stand-in for the Hub ----------------------------------------


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers repository look-ups as the Hub does for a missing, private or gated repository."""

    answers = {  # the first path prefix that matches answers
        "/api/models/owner/gated": (403, "GatedRepo"),
        "/api/models/owner/name/revision/nope": (404, "RevisionNotFound"),
        "/": (401, "RepoNotFound"),  # a private repository without a token looks like a missing one
    }

    def do_GET(self):  # noqa: N802 - http.server's name
        status, code = next(a for prefix, a in self.answers.items() if self.path.startswith(prefix))
        body = b'{"error": "stand-in"}'
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def online(hf_cache, monkeypatch):
    """HF_HUB_OFFLINE off and the Hub's endpoint at a local stand-in; yields a function to set the token."""
    from huggingface_hub import constants

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    yield lambda token: monkeypatch.setenv("HF_TOKEN", token)
    server.shutdown()
    server.server_close()


def test_missing_private_gated_and_revision_are_one_line(online):
    with pytest.raises(HubError) as e:
        resolve_checkpoint("hf://owner/missing")
    assert str(e.value) == ("checkpoint=hf://owner/missing: no model repository owner/missing on the Hub, or it is private "
                            "and no token is set (run `hf auth login` or set HF_TOKEN)")
    online("hf_not_a_real_token")
    with pytest.raises(HubError, match="or it is private and your token has no access to it$"):
        resolve_checkpoint("hf://owner/missing")
    with pytest.raises(HubError, match=r"owner/gated is gated: accept its conditions on https://huggingface.co/owner/gated"):
        resolve_checkpoint("hf://owner/gated")
    with pytest.raises(HubError, match="owner/name has no revision 'nope'"):
        resolve_checkpoint("hf://owner/name@nope")


def test_unreachable_hub_falls_back_to_the_cache(hf_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    snapshot = lay_out_cache(hf_cache, "owner/name", {"all_config.yaml": b"arch: {}\n", "checkpoint": b"w"})
    assert resolve_checkpoint("hf://owner/name") == str(snapshot / "checkpoint")
    with pytest.raises(HubError, match=r"^checkpoint=hf://owner/other: the Hub cannot be reached \(\w+\) and the local"):
        resolve_checkpoint("hf://owner/other")



# ---- hf:// wherever a checkpoint is read; checkpoints that stand alone -------------------------

PUZZLES = "....34........41\n.....13.....4..3\n.1..4...2.....3.,3124421323411432\n"


def moved_config(ck: Path, data: Path) -> str:
    """The run's all_config.yaml with its dataset recorded at a path that does not exist."""
    return (ck / "all_config.yaml").read_text().replace(str(data), "data/moved-away")


@pytest.fixture(scope="module")
def release_folder(trained_hrm, sudoku4, tmp_path_factory):
    """The tiny trained HRM in the original releases' layout: only all_config.yaml (its dataset no
    longer at the recorded path) and ``checkpoint`` with the compiled model's ``_orig_mod.`` keys."""
    ck, _ = trained_hrm
    folder = tmp_path_factory.mktemp("release")
    (folder / "all_config.yaml").write_text(moved_config(ck, sudoku4))
    torch.save({"_orig_mod." + k: v for k, v in load_weights(ck / "step_12").items()}, folder / "checkpoint")
    return folder


@pytest.fixture(scope="module")
def published_folder(trained_hrm, sudoku4, tmp_path_factory):
    """push_to_hub.py local_dir= of a copy of the run whose dataset was deleted afterwards."""
    from scripts import push_to_hub

    ck, _ = trained_hrm
    tmp = tmp_path_factory.mktemp("publish")
    data = Path(shutil.copytree(sudoku4, tmp / "data"))
    run = tmp / "run"
    run.mkdir()
    (run / "all_config.yaml").write_text((ck / "all_config.yaml").read_text().replace(str(sudoku4), str(data)))
    shutil.copy(ck / "step_12", run / "step_12")
    push_to_hub.main([f"checkpoint={run}/step_12", "repo_id=me/published", f"local_dir={tmp / 'repo'}"])
    shutil.rmtree(data)
    return tmp / "repo"


def answers(checkpoint, puzzle_file, *extra):
    import predict

    document = predict.run(predict.parse_cli([f"checkpoint={checkpoint}", f"puzzle_file={puzzle_file}", "trace=true",
                                              "device=cpu", *extra]))
    return document["results"]


@pytest.fixture
def puzzle_file(tmp_path):
    path = tmp_path / "puzzles.txt"
    path.write_text(PUZZLES)
    return path


def test_predict_through_hf_equals_the_local_folder_without_a_dataset(trained_hrm, release_folder, published_folder, hf_cache,
                                                                      puzzle_file):
    ck, _ = trained_hrm
    local = answers(ck / "step_12", puzzle_file)  # the dataset at its recorded path
    assert len(local) == 3 and "trace" in local[0] and "correct" in local[2]
    lay_out_cache(hf_cache, "me/release", {"": release_folder})
    lay_out_cache(hf_cache, "me/published", {"": published_folder})
    # Release layout, compiled keys, no dataset anywhere: sizes from the weights and task=.
    assert answers("hf://me/release", puzzle_file, "task=sudoku") == local
    assert answers(release_folder / "checkpoint", puzzle_file, "task=sudoku") == local
    # Published by push_to_hub.py: model.safetensors, the task recorded in the metadata it carries.
    assert answers("hf://me/published", puzzle_file) == local
    assert answers("hf://me/published/checkpoint", puzzle_file) == local


def test_a_copied_run_folder_carries_its_dataset_metadata(trained_hrm, sudoku4, tmp_path, puzzle_file):
    ck, _ = trained_hrm
    for rel in ("train/dataset.json", "test/dataset.json", "identifiers.json"):
        assert (ck / "dataset" / rel).read_bytes() == (sudoku4 / rel).read_bytes()  # written by training
    copy = tmp_path / "copied"
    shutil.copytree(ck / "dataset", copy / "dataset")
    shutil.copy(ck / "step_12", copy / "step_12")
    (copy / "all_config.yaml").write_text(moved_config(ck, sudoku4))
    assert answers(copy / "step_12", puzzle_file) == answers(ck / "step_12", puzzle_file)


def test_standalone_checkpoint_says_what_is_missing(release_folder, puzzle_file):
    from utils.errors import UserError

    with pytest.raises(UserError) as e:
        answers(release_folder / "checkpoint", puzzle_file)
    assert "data/moved-away/train/dataset.json: missing, and the checkpoint carries no copy of its dataset's metadata: " \
           "say which task it solves with task=" in str(e.value)
    with pytest.raises(UserError, match="task=arc: does not fit this checkpoint"):
        answers(release_folder / "checkpoint", puzzle_file, "task=arc")
    with pytest.raises(UserError, match="this one 25 and 6"):  # seq_len= overrides the task's length
        answers(release_folder / "checkpoint", puzzle_file, "task=sudoku", "seq_len=25")


@pytest.mark.slow
def test_predict_command_reads_the_environment_offline(trained_hrm, release_folder, hf_cache, puzzle_file, tmp_path):
    """HF_HOME / HF_HUB_OFFLINE=1 as a user sets them, read by huggingface_hub in a fresh process."""
    from conftest import REPO, run, subprocess_env

    ck, _ = trained_hrm
    lay_out_cache(hf_cache, "me/release", {"": release_folder})
    env = subprocess_env(HF_HOME=str(hf_cache.parent), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)  # the cache is found through HF_HOME, as for most users
    out = tmp_path / "answers.json"
    run([sys.executable, str(REPO / "predict.py"), "checkpoint=hf://me/release", "task=sudoku", f"puzzle_file={puzzle_file}",
         "trace=true", "device=cpu", f"output={out}"], env=env)
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(answers(ck / "step_12", puzzle_file)))
    proc = run([sys.executable, str(REPO / "predict.py"), "checkpoint=hf://me/not-cached", "task=sudoku", "puzzle=....34........41"],
               env=env, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "HF_HUB_OFFLINE=1 forbids downloading it" in proc.stderr


def test_evaluate_with_data_path_equals_the_recorded_path(trained_hrm, release_folder, sudoku4, hf_cache, tmp_path):
    import evaluate
    from dataset.common import DatasetError

    ck, logged = trained_hrm
    options = dict(save_outputs=[], output_dir=str(tmp_path))
    recorded = evaluate.run(evaluate.EvalConfig(checkpoint=str(ck / "step_12"), **options))["all"]
    assert recorded == pytest.approx(logged[12], rel=1e-6)
    moved = evaluate.run(evaluate.EvalConfig(checkpoint=str(release_folder / "checkpoint"), data_path=str(sudoku4), **options))
    assert moved["all"] == recorded
    lay_out_cache(hf_cache, "me/release", {"": release_folder})
    assert evaluate.run(evaluate.EvalConfig(checkpoint="hf://me/release", data_path=str(sudoku4), **options))["all"] == recorded
    with pytest.raises(DatasetError, match=r"data/moved-away/train/dataset.json: missing: .* give data_path=<the dataset folder>$"):
        evaluate.run(evaluate.EvalConfig(checkpoint="hf://me/release", **options))


@pytest.mark.slow
def test_pretrain_starts_from_an_hf_checkpoint(trained_hrm, release_folder, sudoku4, hf_cache, tmp_path):
    from conftest import TINY_HRM, pretrain, subprocess_env

    ck, _ = trained_hrm
    lay_out_cache(hf_cache, "me/release", {"": release_folder})
    env = subprocess_env(HF_HOME=str(hf_cache.parent), HF_HUB_CACHE=str(hf_cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "ck"
    proc = pretrain(f"data_path={sudoku4}", "epochs=1", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=0",
                    "puzzle_emb_lr=0", *TINY_HRM, "arch.halt_max_steps=3", "load_checkpoint=hf://me/release",
                    f"checkpoint_path={out}", "+run_name=h", env=env)
    assert "Loading checkpoint hf://me/release" in proc.stdout
    saved, start = load_weights(next(out.glob("step_*[0-9]"))), load_weights(ck / "step_12")
    assert saved.keys() == start.keys() and all(torch.equal(saved[k], v) for k, v in start.items())  # lr=0: unchanged


class FakeHubRepo(http.server.BaseHTTPRequestHandler):
    """The Hub's answers for one public model repository (``repo_id`` at commit ``SHA`` holding ``files``):
    its info, its file tree and its files, as huggingface_hub asks for them when downloading."""

    repo_id: str = ""
    files: dict = {}  # path in the repository -> bytes
    served: list = []  # paths of the files downloaded

    def do_GET(self):  # noqa: N802 - http.server's name
        self.reply(send_body=True)

    def do_HEAD(self):  # noqa: N802
        self.reply(send_body=False)

    def reply(self, send_body):
        path = self.path.split("?")[0]
        api = f"/api/models/{self.repo_id}"
        if path in (api, f"{api}/revision/main", f"{api}/revision/{SHA}"):
            return self.send(200, json.dumps({"id": self.repo_id, "sha": SHA, "private": False,
                                              "siblings": [{"rfilename": f} for f in self.files]}).encode(), send_body)
        if path.startswith(f"{api}/tree/"):
            tree = [{"type": "file", "path": f, "size": len(b), "oid": blob_id(b)} for f, b in self.files.items()]
            return self.send(200, json.dumps(tree).encode(), send_body)
        prefix = f"/{self.repo_id}/resolve/"
        if path.startswith(prefix):
            revision, _, name = path[len(prefix):].partition("/")
            if revision in ("main", SHA) and name in self.files:
                if send_body:
                    self.served.append(name)
                return self.send(200, self.files[name], send_body, {"X-Repo-Commit": SHA, "ETag": f'"{blob_id(self.files[name])}"'})
        return self.send(404, b'{"error": "stand-in"}', send_body, {"X-Error-Code": "EntryNotFound" if path.startswith(prefix) else "RepoNotFound"})

    def send(self, status, body, send_body, headers=()):
        self.send_response(status)
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def blob_id(data: bytes) -> str:
    import hashlib
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's id of a file's contents


def test_downloads_weights_and_side_files_once_then_answers_offline(published_folder, hf_cache, monkeypatch, puzzle_file,
                                                                   trained_hrm):
    from huggingface_hub import constants

    files = {p.relative_to(published_folder).as_posix(): p.read_bytes() for p in published_folder.rglob("*") if p.is_file()}
    monkeypatch.setattr(FakeHubRepo, "repo_id", "me/published")
    monkeypatch.setattr(FakeHubRepo, "files", files)
    monkeypatch.setattr(FakeHubRepo, "served", [])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHubRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    try:
        path = resolve_checkpoint("hf://me/published")
    finally:
        server.shutdown()
        server.server_close()
    snapshot = hf_cache / "models--me--published" / "snapshots" / SHA
    assert path == str(snapshot / "model.safetensors") and Path(path).read_bytes() == files["model.safetensors"]
    # The weights once (not the release copy too), and the small files a checkpoint reads beside them.
    assert sorted(FakeHubRepo.served) == sorted(f for f in files if f not in ("checkpoint", "README.md"))
    # Offline from now on: the cache answers the same URI (its refs/main), and predict.py runs from it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_checkpoint("hf://me/published") == path
    ck, _ = trained_hrm
    assert answers("hf://me/published", puzzle_file) == answers(ck / "step_12", puzzle_file)


def test_analyze_checkpoint_names_the_dataset_override(release_folder, hf_cache, tmp_path, capsys):
    from scripts import analyze_checkpoint

    lay_out_cache(hf_cache, "me/release", {"": release_folder})
    with pytest.raises(SystemExit) as e:
        analyze_checkpoint.main(["checkpoint=hf://me/release", f"out={tmp_path / 'analysis'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "data/moved-away/train/dataset.json: missing" in err and "give data_path=<the dataset folder>" in err
