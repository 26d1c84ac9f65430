"""uWSGI's socket is for nginx alone: a local user who is neither its owner
nor in its group cannot connect to it and skip nginx's limits, while nginx
(here its workers run as another user than uWSGI) still reaches it."""
import os
import stat
import subprocess

import pytest

from pokegen.service_stack import ServiceStack

pytestmark = pytest.mark.e2e

NGINX_WORKERS = "daemon"
OTHER_USER_ID = 65534  # nobody: neither uWSGI's user nor nginx's workers'


@pytest.fixture(scope="module")
def stack():
    if os.geteuid() != 0:
        pytest.skip("needs root: uWSGI and nginx's workers under different users")
    service = ServiceStack(NGINX_USER=NGINX_WORKERS)
    os.chmod(service.run_dir, 0o755)  # as `make serve`'s run/ folder: open to look into
    service.start()
    yield service
    assert service.stop() in (0, 143), service.log()


def test_the_socket_is_private_to_its_owner_and_group(stack):
    info = os.stat(os.path.join(stack.run_dir, "uwsgi.sock"))
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_uid == int(subprocess.check_output(["id", "-u", NGINX_WORKERS]))


def test_nginx_reaches_the_app_and_another_user_cannot(stack):
    assert stack.get("/?length=2&seed=1").status_code == 200
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             "    s.connect(sys.argv[1])\n"
             "except PermissionError:\n"
             "    sys.exit(13)\n")
    # The system's Python: the other user may not read the virtualenv.
    result = subprocess.run(["/usr/bin/python3", "-c", probe,
                             os.path.join(stack.run_dir, "uwsgi.sock")],
                            user=OTHER_USER_ID, group=OTHER_USER_ID, extra_groups=[],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 13, result.stderr
