"""A replica joins nginx's rotation (its app-<host>.sock link in the shared socket
folder) only once its model has settled, never while it would answer "loading"."""
import os
import threading

from app.replica_socket import join_when_settled


class LoadingEngine:
    def __init__(self):
        self.loaded = threading.Event()
        self.state = "loading"

    def wait_ready(self, timeout):
        self.loaded.wait(timeout)
        return self.state == "ready"


def test_the_link_appears_once_the_model_has_loaded(tmp_path):
    engine = LoadingEngine()
    (tmp_path / "app-old.sock").symlink_to(".app-gone.sock")  # another replica's, left alone
    joining = join_when_settled(engine, str(tmp_path), host="replica1")
    joining.join(timeout=0.5)
    assert joining.is_alive() and not os.path.lexists(tmp_path / "app-replica1.sock")
    engine.state = "ready"
    engine.loaded.set()
    joining.join(timeout=10)
    assert os.readlink(tmp_path / "app-replica1.sock") == ".app-replica1.sock"
    assert sorted(os.listdir(tmp_path)) == ["app-old.sock", "app-replica1.sock"]  # no temporary left


def test_a_stale_link_of_the_same_name_is_replaced(tmp_path):
    (tmp_path / "app-replica1.sock").symlink_to("elsewhere")
    engine = LoadingEngine()
    engine.state = "failed"  # a model that cannot load still answers, with its reason
    engine.loaded.set()
    join_when_settled(engine, str(tmp_path), host="replica1").join(timeout=10)
    assert os.readlink(tmp_path / "app-replica1.sock") == ".app-replica1.sock"
