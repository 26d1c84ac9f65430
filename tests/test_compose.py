"""The containers for real: CI's compose-up (.ci/docker/compose-up.sh, which runs the
deploy/compose-up.sh that `make compose-up` runs) builds the images and starts the docker-compose
stack, then the tests ask nginx on 127.0.0.1:5000 for an episode, the page, JSONP and a 400, and
compose-down removes the stack again.

Docker is installed and its engine started when missing (as root, see .ci/docker/); an engine
that this module started is stopped at the end. The stack uses host networking (dockerd runs
without a bridge here) with nginx bound to 127.0.0.1, and the tiny test checkpoint is mounted as a
volume. A cold build takes several minutes; later runs reuse the image layers.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time

import pytest
import requests

from compose_stack import compose, compose_stack, skip_unless_docker_can_run

skip_unless_docker_can_run()
pytestmark = pytest.mark.docker

PORT = 5000
URL = f"http://127.0.0.1:{PORT}"


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tiny_checkpoint):
    if port_in_use(PORT):
        pytest.fail(f"port {PORT} is already in use on 127.0.0.1: stop what listens there "
                    f"(make compose-down, or a running `make serve`) and run again")
    with compose_stack("pokegen-test", tiny_checkpoint, PORT, READY_TIMEOUT=600) as env:
        yield env


def container(env: dict, service: str) -> dict:
    ids = compose(env, "ps", "-q", service).split()
    assert len(ids) == 1, f"expected one {service} container, got {ids}"
    inspected = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                               check=True).stdout
    return json.loads(inspected)[0]


def health(env: dict, service: str, timeout: float = 30.0) -> str:
    """The container's health status, once its health check has run since readiness."""
    deadline = time.monotonic() + timeout
    while True:
        status = container(env, service)["State"]["Health"]["Status"]
        if status != "starting" or time.monotonic() > deadline:
            return status
        time.sleep(1)


def test_an_episode_through_nginx_on_port_5000(stack):
    response = requests.get(URL + "/", params={"prefix": "Ash", "length": 12, "seed": 7},
                            timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Server"] == "nginx"
    assert response.headers["Content-Type"].startswith("application/json")
    episode = response.json()
    assert episode["prefix"] == "Ash"
    assert episode["text"].startswith("Ash")
    assert 1 <= episode["tokens"] <= 12
    assert episode["model"] == "run1"
    # Same seed and parameters, same text: the engine in the container is deterministic too.
    again = requests.get(URL + "/", params={"prefix": "Ash", "length": 12, "seed": 7}, timeout=120)
    assert again.json()["text"] == episode["text"]


def test_the_image_serves_int8_weights_with_its_own_kernel(stack):
    """The int8 decoder is compiled in the image's build stage and finds its
    runtime there: without either the engine would fall back to bfloat16."""
    limits = requests.get(URL + "/info", timeout=30).json()["limits"]
    assert limits["weight_dtype"] == "int8"


def test_the_page_and_its_files_load(stack):
    page = requests.get(URL + "/", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any(path.endswith(".js") for path in assets), page.text[:500]
    for path in assets:
        asset = requests.get(URL + path, timeout=30)
        assert asset.status_code == 200, path
        assert asset.content, path


def test_jsonp_for_the_original_front_end(stack):
    response = requests.get(URL + "/", params={"sample": "Pikachu", "length": 8, "callback": "cb"},
                            timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/javascript")
    match = re.fullmatch(r"(?:/\*\*/)?cb\((.*)\);?\s*", response.text, re.S)
    assert match, response.text[:200]
    payload = json.loads(match.group(1))
    assert payload["sample_text"].startswith("Pikachu")


def test_bad_input_is_a_400_with_a_json_reason(stack):
    response = requests.get(URL + "/", params={"length": "abc"}, timeout=30)
    assert response.status_code == 400
    assert "length" in response.json()["error"]
    hostile = requests.get(URL + "/", params={"callback": "alert(document.cookie)//"}, timeout=30)
    assert hostile.status_code == 400
    assert "callback" in hostile.json()["error"]


def test_containers_are_locked_down_and_healthy(stack):
    app = container(stack, "app")
    assert app["Config"]["User"] == "pokegen"
    assert app["HostConfig"]["ReadonlyRootfs"] is True
    assert app["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in app["HostConfig"]["SecurityOpt"]
    # No network at all, so no port of its own: nginx reaches it through the socket volume.
    assert app["HostConfig"]["NetworkMode"] == "none"
    assert not app["HostConfig"]["PortBindings"]
    assert 0 < app["HostConfig"]["Memory"] <= 3 * 1024 ** 3
    assert health(stack, "app") == "healthy"
    assert app["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    nginx = container(stack, "nginx")
    assert nginx["Config"]["User"] == "pokegen"
    assert nginx["HostConfig"]["ReadonlyRootfs"] is True
    assert nginx["HostConfig"]["CapDrop"] == ["ALL"]
    assert 0 < nginx["HostConfig"]["Memory"] <= 256 * 1024 ** 2
    assert health(stack, "nginx") == "healthy"
