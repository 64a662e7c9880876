"""The release artefacts: sdist and wheel build, pass `twine check`, and the wheel runs in a clean
venv with the locked runtime dependencies, without the demo's development server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import __version__

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Outside the source tree and without PYTHONPATH, so only what was installed is imported.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    return result


def _ok(*args: str | Path, cwd: Path) -> str:
    result = _run(*args, cwd=cwd)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_built_wheel_installs_in_a_clean_venv_and_runs(tmp_path):
    dist = tmp_path / "dist"
    _ok(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, ROOT, cwd=tmp_path)
    wheel = next(dist.glob("*.whl"))
    sdist = next(dist.glob("*.tar.gz"))
    assert __version__ in wheel.name and __version__ in sdist.name
    _ok(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=tmp_path)

    venv = tmp_path / "venv"
    _ok(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _ok(python, "-m", "pip", "install", "--quiet", "--require-hashes",
        "-r", ROOT / "requirements" / "runtime.txt", cwd=tmp_path)
    _ok(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel, cwd=tmp_path)
    _ok(python, "-m", "pip", "check", cwd=tmp_path)  # the lock satisfies what the wheel declares

    assert _ok(venv / "bin" / "mutual-aid-bot", "--version", cwd=tmp_path).strip() \
        == f"mutual-aid-bot {__version__}"
    # The runtime code imports with the runtime dependencies alone...
    _ok(python, "-c", "import bot.transport.matrix, bot.setup_wizard, bot.cli", cwd=tmp_path)
    # ... and the development server is not part of it; `demo` says where to find it.
    missing = _run(python, "-c", "import bot.devserver", cwd=tmp_path)
    assert missing.returncode != 0 and "No module named 'bot.devserver'" in missing.stderr
    demo = _run(venv / "bin" / "mutual-aid-bot", "demo", cwd=tmp_path)
    assert demo.returncode == 1 and "make demo" in demo.stderr
