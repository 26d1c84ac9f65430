"""The service's settings have one source, app/config.py's SETTINGS: the README's table is
written from it, `make serve` passes its defaults, and every other file that names settings
(uwsgi.ini, serve.sh, the nginx templates and their render script, docker-compose.yml,
k8s/configmap.yaml) names only settings of the table, passes the ones it should, and keeps
their defaults and ranges."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from app.config import APP, NGINX, SETTINGS, UWSGI
from pokegen.service_stack import ROOT, ServiceStack, short_temp_dir

# How the pieces find each other (paths, sockets, users): set by scripts/serve.sh and the
# images, never tuned, so not in the table.
WIRING = {"RUN_DIR", "POKEGEN_SOCKET", "POKEGEN_SOCKET_DIR", "POKEGEN_SOCKET_OWNER",
          "STATIC_DIR", "NGINX_USER", "VIRTUAL_ENV"}
NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
RENDER = os.path.join(ROOT, "scripts", "render-nginx-config.sh")
TEMPLATES = sorted(glob.glob(os.path.join(ROOT, "nginx", "*.template")))


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def names_in(text: str) -> set:
    """Every upper-case name with an underscore: how settings and variables are written."""
    return set(NAME.findall(text))


def request_variables() -> set:
    """What nginx hands the app per request (QUERY_STRING, ...): not settings."""
    return set(re.findall(r"^uwsgi_param (\w+)", read("nginx", "uwsgi-params.conf.template"),
                          re.M))


def compose_tool_variables() -> set:
    """Variables of docker-compose itself and of make compose-up (POKEGEN_TAG, APP_REPLICAS)."""
    sources = glob.glob(os.path.join(ROOT, "docker-compose*.yml")) + \
        glob.glob(os.path.join(ROOT, "deploy", "docker-compose*.yml")) + \
        glob.glob(os.path.join(ROOT, "deploy", "compose*.sh"))
    return {name for path in sources
            for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", read(path))}


def derived_nginx_values() -> set:
    """Values scripts/render-nginx-config.sh computes for the templates (UPSTREAM_TIMEOUT, ...)."""
    exported = set(re.findall(r"^export (\w+)=", read(RENDER), re.M))
    return exported - set(SETTINGS) - WIRING


def read_by(reader: str, containers_only: bool = False) -> set:
    return {name for name, setting in SETTINGS.items()
            if reader in setting.readers and (setting.containers or not containers_only)}


def unknown(names: set, *also: set) -> set:
    return names - set(SETTINGS) - WIRING - set().union(*also)


def test_wiring_is_set_by_the_scripts_or_the_images():
    setters = read("scripts", "serve.sh") + read(RENDER) + read("Dockerfile") + \
        read("nginx", "Dockerfile") + read("scripts", "render-nginx-upstreams.sh")
    for name in WIRING:
        assert re.search(rf"\b{name}=", setters), name
    assert not WIRING & set(SETTINGS)


# -- The README ---------------------------------------------------------------------------

def test_the_readme_table_is_the_one_written_from_the_settings():
    result = subprocess.run([sys.executable, "scripts/settings_docs.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    table = read("README.md").split("from app/config.py's SETTINGS -->")[1]
    rows = re.findall(r"^\| `(\w+)` \| (`[^`]*`|none) \|", table, re.M)
    assert [name for name, _ in rows] == list(SETTINGS)
    assert {name: default.strip("`") if default != "none" else ""
            for name, default in rows} == {name: s.default for name, s in SETTINGS.items()}


def test_a_stale_readme_table_is_found_and_rewritten(tmp_path):
    readme = tmp_path / "README.md"
    current = read("README.md")
    readme.write_text(current.replace("| `QUEUE_SIZE` | `16` |", "| `QUEUE_SIZE` | `8` |"),
                      encoding="utf-8")
    command = [sys.executable, "scripts/settings_docs.py", "--readme", str(readme)]
    check = subprocess.run(command + ["--check"], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 1 and check.stderr.count("\n") == 1
    assert "out of date" in check.stderr
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    assert readme.read_text(encoding="utf-8") == current


def test_the_readme_names_only_settings_of_the_table():
    assert not unknown(names_in(read("README.md")), compose_tool_variables())


# -- uWSGI and make serve -----------------------------------------------------------------

def test_uwsgi_ini_names_only_settings_and_the_ones_it_reads():
    text = read("uwsgi.ini")
    assert not unknown(names_in(text), request_variables())
    # uWSGI reads REQUEST_TIMEOUT (harakiri) through the app's own parser.
    assert read_by(UWSGI) <= names_in(text)
    assert "-m app.config --harakiri" in text
    assert set(re.findall(r"^if-env = (\w+)", text, re.M)) <= WIRING | set(SETTINGS)


def test_serve_sh_names_only_settings_and_repeats_no_default():
    text = read("scripts", "serve.sh")
    assert not unknown(names_in(text))
    # Defaults come from the table (python -m app.config --export-defaults), never from here.
    repeated = {name for name in SETTINGS if re.search(rf"\$\{{{name}:?-", text)}
    assert not repeated
    assert "-m app.config --export-defaults" in text


def export_defaults(**env) -> dict:
    result = subprocess.run([sys.executable, "-m", "app.config", "--export-defaults"], cwd=ROOT,
                            env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    exported = subprocess.run(["bash", "-c", 'eval "$1"; env -0', "-", result.stdout],
                              env={}, capture_output=True, text=True, check=True).stdout
    values = dict(pair.split("=", 1) for pair in exported.split("\0") if "=" in pair)
    return {name: value for name, value in values.items() if name in SETTINGS}


def test_the_exported_defaults_fill_only_what_is_unset():
    assert export_defaults() == {name: s.default for name, s in SETTINGS.items()}
    set_here = export_defaults(QUEUE_SIZE="2", INTERNAL_ADDRESSES="", RATE_LIMIT="")
    assert "QUEUE_SIZE" not in set_here
    # An empty INTERNAL_ADDRESSES shuts /metrics to everyone: kept. An empty RATE_LIMIT means
    # the default, as nginx's render script reads it.
    assert "INTERNAL_ADDRESSES" not in set_here and set_here["RATE_LIMIT"] == "10"
    # Unset, the restart follows a stall timeout longer than its own default.
    assert export_defaults(STALL_TIMEOUT="1000.5")["STALL_RESTART_AFTER"] == "1000.5"


def test_a_bad_setting_stops_the_export_with_one_line():
    result = subprocess.run([sys.executable, "-m", "app.config", "--export-defaults"], cwd=ROOT,
                            env={"PATH": os.environ["PATH"], "QUEUE_TIMEOUT": "0"},
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: QUEUE_TIMEOUT must be above 0, got '0'\n"


@pytest.mark.e2e
def test_make_serve_hands_the_servers_every_default():
    stack = ServiceStack()
    chosen = {"CHECKPOINT_DIR", "RUN_NAME", "PORT", "BIND_ADDRESS"}  # the test's own
    stack.env = {name: value for name, value in stack.env.items()
                 if name not in SETTINGS or name in chosen}
    expected = {name: stack.env.get(name, setting.default) for name, setting in SETTINGS.items()}
    stack.start()
    try:
        # uWSGI's master and worker. nginx was started from the same exports, but writes its
        # process title over the memory that /proc shows as its environment.
        uwsgi = [p for p in stack.server_processes() if p.name() == "uwsgi"]
        assert len(uwsgi) == 2
        for process in uwsgi:
            environ = process.environ()
            assert {name: environ.get(name) for name in SETTINGS} == expected
    finally:
        stack.stop()


# -- Compose and Kubernetes ---------------------------------------------------------------

def test_compose_passes_each_container_the_settings_it_reads():
    text = read("docker-compose.yml")
    services = yaml.safe_load(text)["services"]
    for service, reader in (("app", APP), ("nginx", NGINX)):
        environment = services[service]["environment"]
        # Bare names: passed on when set on the host, never a default of their own.
        assert all(re.fullmatch(r"[A-Z0-9_]+", entry) for entry in environment), environment
        assert sorted(environment) == sorted(read_by(reader, containers_only=True)), service
    assert not unknown(names_in(text), compose_tool_variables())


def test_the_configmap_holds_every_setting_at_its_default():
    text = read("k8s", "configmap.yaml")
    data = yaml.safe_load(text)["data"]
    assert data == {name: s.default for name, s in SETTINGS.items() if s.containers}
    assert not unknown(names_in(text))


# -- nginx ----------------------------------------------------------------------------------

def test_the_templates_name_only_nginx_settings_and_values_derived_from_them():
    substituted = set(re.findall(r"\$\{(\w+)\}", re.search(r"names='([^']*)'", read(RENDER),
                                                           re.S).group(1)))
    for path in TEMPLATES:
        text = read(path)
        assert not unknown(names_in(text), request_variables(), derived_nginx_values()), path
        placeholders = set(re.findall(r"\$\{(\w+)\}", text))
        assert placeholders <= substituted, path
        assert not placeholders & (set(SETTINGS) - read_by(NGINX)), path


def directives(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def render(run_dir: str, **settings) -> dict | str:
    """The files scripts/render-nginx-config.sh writes for `settings` alone, comments left
    out, or its error."""
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {"PATH": os.environ["PATH"], "RUN_DIR": run_dir, **settings}
    result = subprocess.run([RENDER], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        assert result.stderr.count("\n") == 1 and not result.stdout, result.stderr
        return result.stderr
    return {name: directives(read(path)) for path in sorted(glob.glob(os.path.join(run_dir, "*.conf")))
            for name in [os.path.basename(path)]}


# A value other than the default, for the nginx settings that are not numbers.
OTHER_VALUES = {"BIND_ADDRESS": "127.0.0.1", "TRUSTED_PROXIES": "192.0.2.7",
                "INTERNAL_ADDRESSES": "192.0.2.7"}


@pytest.fixture(scope="module")
def run_dir():
    return short_temp_dir("pokegen-settings-")


@pytest.fixture(scope="module")
def default_render(run_dir):
    return render(run_dir)


def test_the_render_script_keeps_the_tables_defaults(run_dir, default_render):
    assert isinstance(default_render, dict) and "pokegen.conf" in default_render
    spelled_out = {name: SETTINGS[name].default for name in read_by(NGINX)}
    assert render(run_dir, **spelled_out) == default_render


@pytest.mark.parametrize("name", sorted(read_by(NGINX)))
def test_every_nginx_setting_reaches_nginx(run_dir, default_render, name):
    setting = SETTINGS[name]
    value = OTHER_VALUES.get(name) or str(int(setting.default) + 1)
    changed = render(run_dir, **{name: value})
    assert isinstance(changed, dict), changed
    assert changed != default_render


@pytest.mark.parametrize("name", sorted(name for name in read_by(NGINX)
                                        if SETTINGS[name].maximum is not None))
def test_the_render_script_keeps_the_tables_range(run_dir, name):
    setting = SETTINGS[name]
    assert isinstance(render(run_dir, **{name: str(setting.maximum)}), dict)
    assert isinstance(render(run_dir, **{name: str(setting.minimum)}), dict)
    for value in (setting.maximum + 1, setting.minimum - 1):
        assert render(run_dir, **{name: str(value)}).startswith(f"error: {name} must be")


def test_the_kernel_choices_are_the_engines_builds():
    from app.engine import native
    assert SETTINGS[native.KERNEL_SETTING].choices == native.VARIANTS
