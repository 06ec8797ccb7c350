"""deploy/kubernetes renders with `kubectl kustomize`, and every object it renders (and every
example Secret) is valid against the Kubernetes API's schema, checked offline with the models of
the `kubernetes` PyPI package: each object is deserialized into its model class and serialized
back, and must come back unchanged (a misspelt or misplaced field is dropped on the way, a
missing required one or a wrong enum value is refused)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
api = ApiClient()


def rendered(directory: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: ./setup.sh test installs Debian's kubernetes-client")
    text = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def problems(obj: dict[str, Any]) -> list[str]:
    """What the API schema would not accept in `obj`: empty when it is valid."""
    version = obj["apiVersion"].rpartition("/")[2]
    model = f"{version.capitalize()}{obj['kind']}"  # apps/v1 Deployment: V1Deployment
    try:
        back = api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))
    except (ValueError, TypeError, AttributeError) as exc:
        return [f"{obj['kind']} {obj['metadata']['name']}: {exc}"]
    return [f"{obj['kind']} {obj['metadata']['name']}: {d}" for d in _differences(obj, back, "")]


def _differences(sent: Any, back: Any, where: str) -> list[str]:
    if isinstance(sent, dict) and isinstance(back, dict):
        out = [f"{where}.{key}: not a field of the schema" for key in sent if key not in back]
        for key in sent.keys() & back.keys():
            out += _differences(sent[key], back[key], f"{where}.{key}")
        return out
    if isinstance(sent, list) and isinstance(back, list) and len(sent) == len(back):
        return [
            d
            for n, (a, b) in enumerate(zip(sent, back, strict=True))
            for d in _differences(a, b, f"{where}[{n}]")
        ]
    return [] if sent == back else [f"{where}: {sent!r} came back as {back!r}"]


def test_the_base_renders_and_every_object_fits_the_api_schema() -> None:
    objects = rendered(BASE)
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    print("\n" + "\n".join(kinds))
    assert {"StatefulSet", "Deployment", "Service", "NetworkPolicy", "ConfigMap"} <= {
        o["kind"] for o in objects
    }
    found = [p for o in objects for p in problems(o)]
    assert found == []
    examples = [d for d in yaml.safe_load_all((BASE / "secrets.example.yaml").read_text()) if d]
    assert [p for o in examples for p in problems(o)] == []


def test_what_the_brief_asks_of_each_service() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered(BASE)}
    scheduler = objects[("StatefulSet", "permafrost-scheduler")]["spec"]
    assert scheduler["replicas"] == 2
    assert scheduler["volumeClaimTemplates"][0]["metadata"]["name"] == "wal-spool"
    container = scheduler["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["exec"]["command"] == ["permafrost", "status"]
    assert container["resources"]["requests"]
    monitor = objects[("Deployment", "permafrost-monitor")]["spec"]["template"]["spec"]
    assert monitor["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"
    assert ("Service", "permafrost-monitor") in objects
    assert ("Deployment", "permafrost-restore") in objects
    workers = objects[("Deployment", "permafrost-workers")]["spec"]["template"]["spec"]
    assert workers["containers"][0]["command"] == ["permafrost", "worker"]
    config = objects[("ConfigMap", next(n for k, n in objects if k == "ConfigMap"))]["data"]
    assert config["BACKUP_WORKERS"] == "queue"
    assert not any(o["kind"] == "Secret" for o in objects.values())  # never overwrite yours
    # Public-key mode: the private key reaches the restore service only; every service can
    # take either the symmetric key or the public key.
    for (kind, name), obj in objects.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        env = {e["name"] for c in obj["spec"]["template"]["spec"]["containers"] for e in c["env"]}
        assert {"BACKUP_ENCRYPTION_KEY", "BACKUP_PUBLIC_KEY"} <= env, name
        assert ("BACKUP_PRIVATE_KEY" in env) == (name == "permafrost-restore"), name
    for obj in objects.values():  # what `kubectl get all -l` and the NetworkPolicy select by
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "permafrost"


def test_a_misspelt_field_is_caught() -> None:
    objects = rendered(BASE)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe", {"tcpSocket": {"port": 8090}})
    assert any("livenesProbe: not a field" in p for p in problems(deployment))
    service = next(o for o in objects if o["kind"] == "Service")
    service["spec"]["ports"][0]["port"] = "eighty"
    assert problems(service)
    restore = next(o for o in objects if o["metadata"]["name"] == "permafrost-restore")
    del restore["spec"]["template"]["spec"]["containers"][0]["name"]  # required
    assert problems(restore)
