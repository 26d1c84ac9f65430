"""nginx's rendered configuration on its own, without the app behind it: the
page and its files come from nginx, and its own errors are JSON."""
import os
import subprocess

import pytest
import requests

from service_stack import ROOT, free_port, short_temp_dir, wait_until_listening

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def nginx_url():
    run_dir = short_temp_dir("pokegen-nginx-")
    port = free_port()
    env = {**os.environ, "RUN_DIR": run_dir, "PORT": str(port), "BIND_ADDRESS": "127.0.0.1",
           "POKEGEN_SOCKET": os.path.join(run_dir, "no-app.sock")}
    rendered = subprocess.run([os.path.join(ROOT, "scripts", "render-nginx-config.sh")],
                              env=env, check=True, capture_output=True, text=True)
    conf = rendered.stdout.strip()
    nginx = subprocess.Popen(["nginx", "-p", run_dir, "-c", conf, "-e", "stderr",
                              "-g", "daemon off;"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(url, nginx)
        yield url
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


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
