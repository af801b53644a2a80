"""Prepare a GPU readiness check for a machine without network (``make gpu-bundle``).

    python scripts/gpu_bundle.py [--out .gpu_bundle] [--python-version 3.12]

Writes ``<out>/wheels/``: wheels (CPython ``--python-version``, manylinux x86_64) of every runtime
requirement of ``requirements.txt`` that the device image lacks, with their own requirements,
fetched here where the package index is reachable; and ``<out>/reference/``: copies of the
reference fixtures the CUDA checks replay (``../shared`` does not travel to the device). ``wandb``
is left out: with W&B off it is never imported. At most ``--max-mib`` (48) MiB in all, small
enough to copy to the GPU machine with the working tree.

On the device, ``scripts/gpu_check.py --bundle <out>`` installs the wheels with no network
(:func:`install_bundle`: ``pip install --no-index --no-deps --target``) and runs the check.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Iterable, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REFERENCE = os.path.join(REPO, "..", "shared", "reference")

# What a typical GPU image already has (its list of Python packages): torch, numpy,
# tqdm, PyYAML, matplotlib, pillow, huggingface-hub, pytest, pytest-xdist and the rest. Names as
# normalised by PEP 503.
DEVICE_IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# Carried even though the image has them: pydantic-core needs a recent typing-extensions, and the
# image's version is not known here. Tiny, and newer than any floor the image's packages set.
ALWAYS_CARRY = frozenset({"typing-extensions"})
# Not needed on the device: W&B is off there (wandb is imported only when it is on).
LEAVE_OUT = frozenset({"wandb"})
# Pure-Python requirements published only as source archives: built into wheels here first
# (omegaconf 2.3 pins antlr4-python3-runtime 4.9.*, whose only release is an sdist).
SDIST_ONLY = ("antlr4-python3-runtime==4.9.3",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# The fixtures the CUDA checks replay (tests/test_reference_fixtures.py on CUDA).
REFERENCE_FILES = ("hrm_rope.pt", "trm_att.pt")
MAX_MIB = 48.0


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """The normalised distribution name of a wheel file (``pydantic_core-2.41.5-cp312-...whl``)."""
    return normalize(os.path.basename(filename).split("-")[0])


def bundle_requirements(requirements_txt: str = os.path.join(REPO, "requirements.txt"), image: Iterable[str] = DEVICE_IMAGE_PACKAGES) -> List[str]:
    """The lines of ``requirements.txt`` the device image lacks (and that it needs)."""
    have = {normalize(n) for n in image}
    out = []
    with open(requirements_txt) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name = normalize(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
            if name not in have and name not in LEAVE_OUT:
                out.append(line)
    return out


def _pip(python: str, *args: str) -> None:
    cmd = [python, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:6])} ... failed:\n{proc.stderr.strip()[-3000:]}")


def fetch_wheels(dest: str, requirements: List[str], python_version: str, image: Iterable[str] = DEVICE_IMAGE_PACKAGES,
                 python: str = sys.executable) -> List[str]:
    """Wheels of ``requirements`` and everything they need, for CPython ``python_version`` on
    manylinux x86_64, minus what ``image`` has (except :data:`ALWAYS_CARRY`); returns their paths."""
    have = {normalize(n) for n in image} - ALWAYS_CARRY
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _pip(python, "wheel", "-q", "--no-deps", "-w", tmp, *SDIST_ONLY)
        platforms = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip(python, "download", "-q", "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
             *platforms, "--find-links", tmp, "-d", tmp, *requirements)
        kept = []
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".whl") and wheel_name(name) not in have and wheel_name(name) not in LEAVE_OUT:
                shutil.copy(os.path.join(tmp, name), os.path.join(dest, name))
                kept.append(os.path.join(dest, name))
    return kept


def folder_mib(path: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2 ** 20


def build_bundle(out: str, python_version: str = "3.12", reference_dir: Optional[str] = DEFAULT_REFERENCE,
                 image: Iterable[str] = DEVICE_IMAGE_PACKAGES, max_mib: float = MAX_MIB) -> float:
    """Write the bundle to ``out`` (built beside it, then renamed: never half-written); its size in MiB."""
    out = os.path.abspath(out)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    wheels = fetch_wheels(os.path.join(tmp, "wheels"), bundle_requirements(image=image), python_version, image=image)
    copied = []
    if reference_dir is not None:
        missing = [f for f in REFERENCE_FILES if not os.path.isfile(os.path.join(reference_dir, f))]
        if missing:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SystemExit(f"error: reference fixtures {', '.join(missing)} not found in {os.path.abspath(reference_dir)} "
                             "(--reference DIR, or --reference none to leave them out)")
        os.makedirs(os.path.join(tmp, "reference"))
        for f in REFERENCE_FILES:
            shutil.copy(os.path.join(reference_dir, f), os.path.join(tmp, "reference", f))
            copied.append(f)
    size = folder_mib(tmp)
    if size > max_mib:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"error: the bundle would be {size:.1f} MiB, over the {max_mib:g} MiB limit")
    with open(os.path.join(tmp, "MANIFEST.txt"), "w") as f:
        f.write(f"python {python_version}, manylinux x86_64; {size:.1f} MiB\n")
        f.writelines(f"wheels/{os.path.basename(w)}\n" for w in wheels)
        f.writelines(f"reference/{c}\n" for c in copied)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return size


def install_bundle(bundle: str, target: str, python: str = sys.executable) -> List[str]:
    """Install every wheel of ``bundle`` into ``target`` with no network (no index, no dependency
    resolution: the bundle holds exactly what is missing); returns the wheel names."""
    wheels = sorted(os.path.join(bundle, "wheels", w) for w in os.listdir(os.path.join(bundle, "wheels")) if w.endswith(".whl"))
    _pip(python, "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade", "--target", target, *wheels)
    return [os.path.basename(w) for w in wheels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, ".gpu_bundle"), help="bundle folder (default .gpu_bundle)")
    parser.add_argument("--python-version", default="3.12", help="the device's Python (default 3.12)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="reference fixtures folder (default ../shared/reference; 'none': leave out)")
    parser.add_argument("--max-mib", type=float, default=MAX_MIB, help=f"size limit (default {MAX_MIB:g})")
    args = parser.parse_args()
    size = build_bundle(args.out, args.python_version, None if args.reference == "none" else args.reference, max_mib=args.max_mib)
    print(f"gpu-bundle: {args.out} ({size:.1f} MiB): wheels for Python {args.python_version} of "
          f"{', '.join(bundle_requirements())} and their needs, plus the reference fixtures; carry it to the device (README, GPU readiness check)")


if __name__ == "__main__":
    main()
