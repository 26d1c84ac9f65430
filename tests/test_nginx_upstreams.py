"""scripts/render-nginx-upstreams.sh: nginx's upstream servers from the replicas' sockets in a
shared folder (the containers), or the one socket of `make serve`; and the rendered site with
several servers passes `nginx -t`."""
import os
import socket
import subprocess

import pytest

from pokegen.service_stack import ROOT, short_temp_dir

pytestmark = pytest.mark.e2e

RENDER = os.path.join(ROOT, "scripts", "render-nginx-upstreams.sh")


def render(run_dir: str, **env) -> str:
    done = subprocess.run([RENDER], env={**os.environ, "RUN_DIR": run_dir, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def servers(run_dir: str) -> list:
    with open(os.path.join(run_dir, "pokegen-upstreams.conf"), encoding="utf-8") as f:
        return f.read().splitlines()


def bound(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    return listener


def test_one_server_per_published_replica_socket():
    folder, run_dir = short_temp_dir("pokegen-sockets-"), short_temp_dir("pokegen-run-")
    assert render(run_dir, POKEGEN_SOCKET_DIR=folder) == "changed"
    # No replica yet: a server that does not exist, so nginx answers its JSON 502.
    assert servers(run_dir) == [f"server unix:{folder}/app-none.sock max_fails=0;"]

    listeners = [bound(os.path.join(folder, f".app-{name}.sock")) for name in ("b", "a")]
    os.symlink(".app-a.sock", os.path.join(folder, "app-a.sock"))
    os.symlink(".app-b.sock", os.path.join(folder, "app-b.sock"))
    os.symlink(".app-gone.sock", os.path.join(folder, "app-gone.sock"))  # a stopped replica
    open(os.path.join(folder, "app-notasocket.sock"), "w").close()
    assert render(run_dir, POKEGEN_SOCKET_DIR=folder) == "changed"
    assert servers(run_dir) == [f"server unix:{folder}/app-a.sock max_fails=0;",
                                f"server unix:{folder}/app-b.sock max_fails=0;"]
    # Nothing changed: nothing to reload.
    assert render(run_dir, POKEGEN_SOCKET_DIR=folder) == ""
    os.unlink(os.path.join(folder, "app-b.sock"))  # a replica restarting unpublishes itself
    assert render(run_dir, POKEGEN_SOCKET_DIR=folder) == "changed"
    assert servers(run_dir) == [f"server unix:{folder}/app-a.sock max_fails=0;"]
    for listener in listeners:
        listener.close()


def test_make_serve_has_its_one_socket():
    run_dir = short_temp_dir("pokegen-run-")
    render(run_dir, POKEGEN_SOCKET="/srv/x/uwsgi.sock")
    assert servers(run_dir) == ["server unix:/srv/x/uwsgi.sock max_fails=0;"]


def test_the_site_with_several_replicas_passes_nginx_t():
    folder, run_dir = short_temp_dir("pokegen-sockets-"), short_temp_dir("pokegen-run-")
    listeners = [bound(os.path.join(folder, f".app-{n}.sock")) for n in range(3)]
    for n in range(3):
        os.symlink(f".app-{n}.sock", os.path.join(folder, f"app-{n}.sock"))
    env = {**os.environ, "RUN_DIR": run_dir, "POKEGEN_SOCKET_DIR": folder, "PORT": "5999",
           "BIND_ADDRESS": "127.0.0.1"}
    conf = subprocess.run([os.path.join(ROOT, "scripts", "render-nginx-config.sh")], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert len(servers(run_dir)) == 3
    checked = subprocess.run(["nginx", "-t", "-p", run_dir, "-c", conf, "-e", "stderr"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with open(os.path.join(run_dir, "pokegen.conf"), encoding="utf-8") as f:
        site = f.read()
    assert "least_conn;" in site and "uwsgi_next_upstream error timeout http_503;" in site
    for listener in listeners:
        listener.close()
