"""utils/hub.py: hf:// URIs resolved by huggingface_hub itself, against a Hugging Face cache the
tests lay out (``models--owner--name/refs/<rev>``, ``snapshots/<sha>/...``, ``blobs/``) with
HF_HUB_OFFLINE=1, and against a local stand-in for the Hub's HTTP answers (missing, private, gated
repositories; an unreachable Hub)."""
import http.server
import threading
from pathlib import Path

import pytest

from conftest import HF_TEST_COMMIT as SHA, free_port, lay_out_hf_cache as lay_out_cache
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


def test_resolver_imports_nothing_of_the_project():
    text = (Path(__file__).resolve().parents[1] / "utils" / "hub.py").read_text()
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if line.split()[1].split(".")[0] in ("utils", "models", "dataset", "tasks", "training", "inference")]
