"""What the images and compose files name is there, without building anything: every COPY source
of both Dockerfiles exists and passes .dockerignore's allow-list, the app image gets every module
of pokegen/ that the app imports, and every compose file that a script names exists. The images
themselves are built and run by test_compose.py."""
import fnmatch
import glob
import os
import re

import pytest
import yaml

from pokegen.service_stack import ROOT

DOCKERFILES = ["Dockerfile", os.path.join("nginx", "Dockerfile")]


def ignore_rules() -> list:
    """(pattern, excluded) pairs of .dockerignore, in order: the last one that matches wins."""
    with open(os.path.join(ROOT, ".dockerignore"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [(line.lstrip("!"), not line.startswith("!")) for line in lines]


def sent_to_the_build(path: str, rules: list) -> bool:
    """Whether Docker sends `path` (relative to the root) to the build: a pattern matches the
    path itself or a folder it is in."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern, excludes in rules:
        if any(fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(
                prefix, pattern.replace("**/", "")) for prefix in prefixes):
            excluded = excludes
    return not excluded


def copy_sources(dockerfile: str) -> list:
    with open(os.path.join(ROOT, dockerfile), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    sources = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            sources += words[1:-1]
    return sources


def files_under(source: str) -> list:
    paths = glob.glob(os.path.join(ROOT, source.rstrip("/")))
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [os.path.join(folder, name) for folder, _, names in os.walk(path)
                      for name in names if "__pycache__" not in folder]
        else:
            files.append(path)
    return [os.path.relpath(path, ROOT) for path in files]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copy_source_exists_and_reaches_the_build(dockerfile):
    rules = ignore_rules()
    for source in copy_sources(dockerfile):
        files = [path for path in files_under(source) if not path.endswith((".pyc", ".so"))]
        if source.startswith("checkpoint"):
            continue  # the trained model, absent from a fresh clone by design
        assert files, f"{dockerfile}: COPY {source} names nothing"
        # Left out only by a line of .dockerignore that names it, never by the allow-list's "*".
        named = [(pattern, excludes) for pattern, excludes in rules if pattern != "*"]
        left_out = [path for path in files if not sent_to_the_build(path, rules)
                    and sent_to_the_build(path, named)]
        assert not left_out, f"{dockerfile}: COPY {source} but .dockerignore leaves out {left_out}"


def pokegen_imports(path: str) -> set:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return set(re.findall(r"^\s*(?:from|import) pokegen\.(\w+)", text, re.M)) | {
        name for names in re.findall(r"^\s*from pokegen import ([\w, ]+)$", text, re.M)
        for name in names.replace(" ", "").split(",")}


def test_the_app_image_gets_every_pokegen_module_the_app_imports():
    rules = ignore_rules()
    needed = set()
    todo = [path for path in glob.glob(os.path.join(ROOT, "app", "**", "*.py"), recursive=True)]
    todo.append(os.path.join(ROOT, "wsgi.py"))
    while todo:
        for module in pokegen_imports(todo.pop()) - needed:
            needed.add(module)
            todo.append(os.path.join(ROOT, "pokegen", f"{module}.py"))
    assert {"model_card", "gpt2_format", "atomic_files"} <= needed
    assert "pokegen/" in copy_sources("Dockerfile")
    for module in sorted(needed) + ["__init__"]:
        assert sent_to_the_build(f"pokegen/{module}.py", rules), module
    # The test harness in the package stays out of the product.
    assert not sent_to_the_build("pokegen/service_stack.py", rules)


def test_every_compose_file_a_script_names_exists_and_loads():
    scripts = ["deploy/compose-up.sh", ".ci/docker/compose-files.sh"]
    named = set()
    for script in scripts:
        with open(os.path.join(ROOT, script), encoding="utf-8") as f:
            named |= set(re.findall(r"(?:[\w.]+/)*docker-compose[\w.-]*\.yml", f.read()))
    assert {"docker-compose.yml", "docker-compose.override.yml",
            "deploy/docker-compose.checkpoint-volume.yml",
            ".ci/docker/docker-compose.host-network.yml",
            ".ci/docker/docker-compose.local-wheels.yml"} <= named
    for name in named:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            compose = yaml.safe_load(f)
        assert compose["version"] == "2.4" and compose["services"], name
