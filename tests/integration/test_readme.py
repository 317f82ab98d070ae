"""The README's path for a newcomer, followed as written: after `bash scripts/setup.sh`, the one line it
gives to get `canaria` on the PATH makes the bare commands of the README and docs/ work: `canaria`,
`kubectl canaria` (kubectl finds the plugin on the PATH) and `python benchmarks/engine.py`.

(The sandbox's commands are followed in test_sandbox.py; the install docs in test_install_docs.py.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _on_path_line() -> str:
    match = re.search(r"`(source \.venv/bin/activate)` puts `canaria`", README)
    assert match, "the README no longer says how to get canaria on the PATH"
    return match.group(1)


@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "activate").is_file(), reason="no .venv: run scripts/setup.sh"
)
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_readme_puts_canaria_on_the_path_for_every_documented_command() -> None:
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "KUBECONFIG")}
    env["PATH"] = path  # a fresh shell: nothing of the virtualenv on the PATH yet
    script = " && ".join(
        [
            _on_path_line(),
            "canaria --version",
            "kubectl canaria promote --help",
            "python benchmarks/engine.py --seconds 0.02",
        ]
    )
    run = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("canaria ")
    assert "usage: kubectl canaria promote" in run.stdout
    assert "engine.decide" in run.stdout and "decisions/s" in run.stdout
