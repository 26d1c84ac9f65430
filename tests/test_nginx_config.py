"""nginx's rendered configuration on its own, without the app behind it: the
page and its files come from nginx, and its own errors are JSON."""
import os
import subprocess

import pytest
import requests
import yaml

from app.config import Config
from nginx_alone import nginx_alone, rendered_upstream_timeouts
from pokegen.service_stack import ROOT, short_temp_dir

pytestmark = pytest.mark.e2e

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def nginx_url():
    with nginx_alone(os.path.join(short_temp_dir("pokegen-no-app-"), "no-app.sock")) as url:
        yield url


def test_api_answers_json_502_with_retry_after_when_the_app_is_down(nginx_url):
    for path in ("/?prefix=Ash", "/stream?prefix=Ash", "/healthz", "/"):
        response = requests.get(nginx_url + path, timeout=10)
        assert response.status_code == 502, path
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Retry-After"] == "5"
        assert "not answering" in response.json()["error"]


def test_v1_answers_openais_502_when_the_app_is_down(nginx_url):
    for method, path in (("POST", "/v1/completions"), ("GET", "/v1/models")):
        response = requests.request(method, nginx_url + path, json={}, timeout=10)
        assert response.status_code == 502 and response.headers["Retry-After"] == "5"
        assert response.json()["error"]["type"] == "server_error"
        assert "not answering" in response.json()["error"]["message"]


def test_browsers_get_the_page_from_nginx(nginx_url):
    page = requests.get(nginx_url + "/", headers={"Accept": BROWSER_ACCEPT}, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Server"] == "nginx"
    assert '<script src="/static/app.js" defer></script>' in page.text
    style = requests.get(nginx_url + "/static/style.css", timeout=10)
    assert style.status_code == 200 and style.headers["Content-Type"].startswith("text/css")


def test_nginx_errors_are_json(nginx_url):
    missing = requests.get(nginx_url + "/static/nothing.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "no such path"
    too_long = requests.get(nginx_url + "/?prefix=" + "a" * 40_000, timeout=10)
    assert too_long.status_code == 414 and "1000 characters" in too_long.json()["error"]
    posted = requests.post(nginx_url + "/static/app.js", timeout=10)
    assert posted.status_code == 405 and posted.json()["status"] == 405


@pytest.mark.parametrize("request_timeout, upstream", [(None, 330), ("300", 330), ("60", 90),
                                                       ("12.5", 43), ("1", 31)])
def test_nginx_waits_for_the_app_longer_than_its_request_timeout(request_timeout, upstream):
    settings = {} if request_timeout is None else {"REQUEST_TIMEOUT": request_timeout}
    assert rendered_upstream_timeouts(**settings) == {upstream}
    # The app's own deadline, from the same setting, comes first.
    assert Config.from_env(settings).request_timeout < upstream


@pytest.mark.parametrize("value", ["1e3", "abc", "-5", "0", "86401", ""])
def test_a_request_timeout_nginx_cannot_use_is_one_line(value):
    env = {"PATH": os.environ["PATH"], "RUN_DIR": short_temp_dir("pokegen-render-"),
           "REQUEST_TIMEOUT": value or " "}
    result = subprocess.run([os.path.join(ROOT, "scripts", "render-nginx-config.sh")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: REQUEST_TIMEOUT must be") and result.stderr.count("\n") == 1


def test_the_nginx_image_derives_its_wait_from_the_apps_request_timeout():
    # The image's own environment (its Dockerfile's ENV), plus what compose passes on.
    with open(os.path.join(ROOT, "nginx", "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read().replace("\\\n", " ")
    image_env = dict(pair.split("=", 1) for line in dockerfile.splitlines()
                     if line.startswith("ENV ") for pair in line.split()[1:])
    image_env.pop("RUN_DIR")  # a tmpfs in the container; a fresh folder here
    assert rendered_upstream_timeouts(**image_env, REQUEST_TIMEOUT=60) == {90}
    with open(os.path.join(ROOT, "docker-compose.yml"), encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    assert "REQUEST_TIMEOUT" in compose["services"]["nginx"]["environment"]
    assert "REQUEST_TIMEOUT" in compose["services"]["app"]["environment"]
