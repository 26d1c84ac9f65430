"""The Kubernetes manifests in k8s/: valid against a current Kubernetes version's schemas
(kubernetes-validate, strict), clean under checkov, and consistent with the service they run.
No cluster is started (none can run here); the validators are the real tools, installed by
`make test` into build/k8s-venv (`make k8s-tools`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from nginx_alone import rendered_upstream_timeouts
from pokegen.service_stack import ROOT

K8S = os.path.join(ROOT, "k8s")
TOOLS = os.path.join(ROOT, "build", "k8s-venv", "bin")
VALIDATE = os.path.join(ROOT, "scripts", "validate-k8s.sh")

if not os.path.exists(os.path.join(TOOLS, "checkov")):
    pytest.skip("the manifest validators are not installed: make k8s-tools (make test does it)",
                allow_module_level=True)


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def resources(folder: str = K8S) -> dict:
    """kind -> manifest, for the files the folder's kustomization lists."""
    kustomization = load(os.path.join(folder, "kustomization.yaml"))
    return {doc["kind"]: doc for doc in (load(os.path.join(folder, name))
                                         for name in kustomization["resources"])}


def checkov(folder: str) -> dict:
    result = subprocess.run([os.path.join(TOOLS, "checkov"), "--directory", folder,
                             "--framework", "kubernetes", "--skip-download", "--output", "json"],
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    return {"returncode": result.returncode, **report["results"]}


def copy_with(tmp_path, change) -> str:
    """k8s/ copied, with change(deployment) applied to the Deployment."""
    folder = tmp_path / "k8s"
    shutil.copytree(K8S, folder)
    path = folder / "deployment.yaml"
    deployment = load(str(path))
    change(deployment)
    path.write_text(yaml.safe_dump(deployment), encoding="utf-8")
    return str(folder)


def containers(deployment: dict) -> dict:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_every_manifest_is_in_a_kustomization():
    for folder in (K8S, os.path.join(K8S, "prometheus-adapter")):
        listed = set(load(os.path.join(folder, "kustomization.yaml"))["resources"])
        present = {name for name in os.listdir(folder)
                   if name.endswith(".yaml") and name != "kustomization.yaml"}
        assert listed == present, folder


def test_the_manifests_pass_both_validators():
    result = subprocess.run([VALIDATE], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "files pass against Kubernetes 1.37" in result.stdout
    assert "Failed checks: 0" in result.stdout


def test_checkov_skips_only_what_the_deployment_explains():
    report = checkov(K8S)
    assert report["returncode"] == 0 and not report["failed_checks"]
    skipped = {check["check_id"] for check in report["skipped_checks"]}
    annotations = resources()["Deployment"]["metadata"]["annotations"]
    explained = {value.split("=", 1)[0] for key, value in annotations.items()
                 if key.startswith("checkov.io/skip") and len(value.split("=", 1)[1]) > 20}
    assert skipped == explained == {"CKV_K8S_15", "CKV_K8S_43"}


def test_a_misspelt_field_fails_the_schema_check(tmp_path):
    def misspell(deployment):
        app = containers(deployment)["app"]
        app["readinesProbe"] = app.pop("readinessProbe")
    folder = copy_with(tmp_path, misspell)
    result = subprocess.run([VALIDATE, folder], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


def test_a_writable_root_filesystem_fails_checkov(tmp_path):
    def loosen(deployment):
        containers(deployment)["app"]["securityContext"]["readOnlyRootFilesystem"] = False
    report = checkov(copy_with(tmp_path, loosen))
    assert report["returncode"] != 0
    assert "CKV_K8S_22" in {check["check_id"] for check in report["failed_checks"]}


def test_the_pod_is_hardened_and_probed_like_the_compose_stack():
    deployment = resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["limits"]["memory"] == container["resources"]["requests"]["memory"]
    app = containers(deployment)["app"]
    assert "/readyz" in app["readinessProbe"]["exec"]["command"]
    assert "/healthz" in app["livenessProbe"]["exec"]["command"]
    startup = app["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # a cold model load
    assert containers(deployment)["nginx"]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_a_stopping_pod_finishes_its_longest_request():
    deployment = resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    settings = resources()["ConfigMap"]
    # Both containers read the one ConfigMap; nginx derives its wait from REQUEST_TIMEOUT
    # and UPSTREAM_MARGIN (scripts/render-nginx-config.sh), as make serve and compose do.
    for name in ("app", "nginx"):
        assert containers(deployment)[name]["envFrom"] == [
            {"configMapRef": {"name": settings["metadata"]["name"]}}], name
    [upstream_timeout] = rendered_upstream_timeouts(**settings["data"])
    assert upstream_timeout > float(settings["data"]["REQUEST_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > upstream_timeout
    nginx_stop = " ".join(containers(deployment)["nginx"]["lifecycle"]["preStop"]["exec"]["command"])
    assert "sleep" in nginx_stop and "kill -QUIT 1" in nginx_stop
    app_stop = containers(deployment)["app"]["lifecycle"]["preStop"]["exec"]["command"]
    assert any(part.endswith("uwsgi_drain.py") for part in app_stop)


def test_the_autoscaler_uses_a_metric_the_app_exports():
    from app.metrics import ServiceMetrics

    class IdleEngine:
        state = "ready"

        def stats(self):
            return {"queued": 0, "in_flight": 0}

        def graph_ops(self):
            return 0

    exported = ServiceMetrics(IdleEngine()).exposition().decode()
    hpa = resources()["HorizontalPodAutoscaler"]
    pods_metric = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metric == ["pokegen_generations_in_flight"]
    assert f"\n{pods_metric[0]} " in exported
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    adapter = resources(os.path.join(K8S, "prometheus-adapter"))["ConfigMap"]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert [rule["name"]["as"] for rule in rules] == pods_metric
    assert rules[0]["seriesQuery"].startswith(pods_metric[0] + "{")


def test_the_budget_and_the_service_select_the_pods():
    manifests = resources()
    labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        spec = manifests[kind]["spec"]
        selector = spec.get("selector", spec.get("podSelector"))
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
