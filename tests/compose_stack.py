"""The stack in containers, for the docker tests: started and removed through CI's compose
scripts (.ci/docker/), which install and start Docker when missing (as root), build the images
(reusing the layers of earlier runs) and mount the tiny test checkpoint as a volume."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from pokegen.service_stack import ROOT

CI_DOCKER = os.path.join(ROOT, ".ci", "docker")


def skip_unless_docker_can_run() -> None:
    """Skips the calling test module where Docker can neither be installed and started (that
    needs root) nor used as it is."""
    if os.geteuid() == 0:
        return
    if shutil.which("docker") and shutil.which("docker-compose") and subprocess.run(
            ["docker", "info"], capture_output=True).returncode == 0:
        return
    pytest.skip("the container tests install and start Docker, which needs root "
                "(or a running engine and docker-compose usable by this user)",
                allow_module_level=True)


def run_script(name: str, env: dict, log_path: str, timeout: float) -> None:
    with open(log_path, "ab") as log:
        result = subprocess.run([os.path.join(CI_DOCKER, name)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout)
    if result.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            tail = log.read()[-5000:]
        raise AssertionError(f"{name} exited with {result.returncode}:\n{tail}")


@contextlib.contextmanager
def compose_stack(project: str, checkpoint_dir: str, port: int, **settings):
    """The stack up under `project` on 127.0.0.1:`port` with `settings` in its environment;
    yields that environment (for compose()), and removes the stack at the end."""
    os.chmod(checkpoint_dir, 0o755)  # the app runs as an unprivileged user in its container
    work_dir = tempfile.mkdtemp(prefix=f"{project}-")
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project,
        "POKEGEN_TAG": "test",
        "POKEGEN_CHECKPOINT": "volume",
        "CHECKPOINT_DIR": checkpoint_dir,
        "RUN_NAME": "run1",
        "PORT": str(port),
        # Only an engine started here is stopped at the end.
        "POKEGEN_DOCKERD_MARKER": os.path.join(work_dir, "dockerd.pid"),
        "PYTHON": sys.executable,
        **{name: str(value) for name, value in settings.items()},
    }
    env.pop("COMPOSE_FILE", None)
    log_path = os.path.join(work_dir, "compose.log")
    try:
        run_script("compose-up.sh", env, log_path, timeout=40 * 60)
        yield env
    finally:
        run_script("compose-down.sh", env, log_path, timeout=10 * 60)
        shutil.rmtree(work_dir, ignore_errors=True)


def compose(env: dict, *args: str) -> str:
    """docker-compose's output for `args` on the stack of `env`."""
    return subprocess.run([os.path.join(CI_DOCKER, "compose.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def uwsgi_client():
    """deploy/uwsgi_readyz.py, the images' own uWSGI client: a plain script there, outside any
    package, so it is loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        "uwsgi_readyz", os.path.join(ROOT, "deploy", "uwsgi_readyz.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
