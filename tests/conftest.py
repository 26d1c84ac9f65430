"""Fixtures shared by the tests: the tiny checkpoint (built once per session), an engine on it,
Flask's test client over an engine double, and the real stack behind nginx.

Markers (pytest.ini): `e2e` starts real servers as processes, `docker` runs the containers,
`slow` takes minutes. `make test-fast` runs what carries none of them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app import create_app
from app.config import Config
from engine_double import EngineDouble
from engine_models import perturbed_copy, started_engine
from pokegen.service_stack import ServiceStack, short_temp_dir, tiny_checkpoint_dir, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def tiny_checkpoint() -> str:
    """A checkpoint folder holding run1, a freshly initialised tiny model. Shared by every test
    of the session, and by the stacks they start: copy it before changing it
    (engine_models.copy_tiny_run)."""
    return tiny_checkpoint_dir()


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    """The real engine on the tiny checkpoint, three sequences at once and four waiting."""
    engine = started_engine(tiny_checkpoint, max_batch=3, max_queue=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def perturbed_model(tmp_path_factory):
    """A copy of the tiny run with every weight perturbed, so that a forward pass that
    mishandles any weight gives other logits: (checkpoint_dir, checkpoint, tokenizer)."""
    return perturbed_copy(str(tmp_path_factory.mktemp("perturbed")))


@pytest.fixture
def engine_double() -> EngineDouble:
    return EngineDouble()


@pytest.fixture
def client(engine_double):
    """Flask's test client for the whole app, generating with the engine double."""
    return create_app(Config(), engine=engine_double).test_client()


@pytest.fixture(scope="module")
def start_stack():
    """Starts `make serve`'s stack on a free port with the given settings (as ServiceStack
    takes them); every stack started is stopped when the module ends, and must stop cleanly."""
    stacks = []

    def start(**settings) -> ServiceStack:
        stack = ServiceStack(**settings)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        assert stack.stop() in (0, 143), stack.log()


@pytest.fixture(scope="module")
def echo_socket():
    """Real uWSGI serving the stand-in app echo_wsgi.py on a unix socket, with room for many
    held requests: what nginx lets through is seen exactly."""
    path = os.path.join(short_temp_dir("pokegen-echo-"), "echo.sock")
    uwsgi = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "uwsgi"), "--socket", path,
         "--chmod-socket=666", "--wsgi-file", os.path.join(HERE, "echo_wsgi.py"),
         "--master", "--processes", "1", "--threads", "64", "--listen", "128",
         "--disable-logging", "--die-on-term"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: os.path.exists(path), timeout=30)
    yield path
    uwsgi.terminate()
    uwsgi.wait(timeout=30)
