"""W&B mode choice: never a login prompt; env variables honoured; offline fallback says so."""
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from utils.wandb_logging import DisabledRun, choose_wandb_mode, init_wandb


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


def test_offline_without_credentials(no_credentials):
    mode, message = choose_wandb_mode()
    assert mode == "offline" and "no credentials" in message and "wandb sync" in message


def test_environment_is_honoured(no_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_wandb_mode() == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert choose_wandb_mode() == ("online", None)
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert choose_wandb_mode() == ("disabled", None)
    monkeypatch.delenv("WANDB_DISABLED")
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    assert choose_wandb_mode() == ("online", None)


def test_disabled_never_imports_wandb(no_credentials, monkeypatch):
    """W&B off: a machine without the wandb package trains (the GPU check's bundle leaves it out)."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises ImportError
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = init_wandb("project", "name", {"lr": 1e-4})
    assert isinstance(run, DisabledRun)
    run.log({"train/lm_loss": 1.0}, step=1)
    run.finish()
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(ImportError, match="needs the wandb package: pip install wandb, or set WANDB_MODE=disabled"):
        init_wandb("project", "name", {})


@pytest.mark.slow
def test_real_offline_run_does_not_wait_for_a_login(sudoku4, tmp_path):
    env = subprocess_env(NETRC=str(tmp_path / "netrc"), WANDB_DIR=str(tmp_path), HOME=str(tmp_path))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(REPO / "pretrain.py"), f"data_path={sudoku4}", "epochs=1", "eval_interval=1",
                           "global_batch_size=8", "evaluators=[]", "arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1",
                           "arch.L_layers=1", "+arch.forward_dtype=float32", f"checkpoint_path={tmp_path / 'ck'}"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "logging offline" in proc.stdout
    assert list((tmp_path / "wandb").glob("offline-run-*")), "an offline run folder should exist for `wandb sync`"
