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

from permafrost.config.fleet import read_sources_file
from permafrost.config.settings import Settings

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
    config = configmap(objects, "permafrost-config")
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


def configmap(objects: dict[tuple[str, str], Any], name: str) -> dict[str, str]:
    """A generated ConfigMap's data, by its name before kustomize's hash suffix."""
    (found,) = [o for (k, n), o in objects.items() if k == "ConfigMap" and n.startswith(name + "-")]
    data: dict[str, str] = found["data"]
    return data


FLEET_PODS = (
    "permafrost-scheduler",
    "permafrost-workers",
    "permafrost-monitor",
    "permafrost-restore",
)


def test_the_sources_file_and_its_passwords_are_mounted_where_each_service_reads_them(
    tmp_path: Path,
) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered(BASE)}
    sources_map = next(
        n for k, n in objects if k == "ConfigMap" and n.startswith("permafrost-sources-")
    )
    sources_file = Path(configmap(objects, "permafrost-config")["SOURCES_FILE"])
    assert "DB_NAME" not in configmap(objects, "permafrost-config")  # refused beside SOURCES_FILE
    (key,) = configmap(objects, "permafrost-sources")
    assert key == sources_file.name
    pods = {
        n: o["spec"]["template"]["spec"]
        for (k, n), o in objects.items()
        if n in FLEET_PODS and k in ("Deployment", "StatefulSet")
    }
    assert sorted(pods) == sorted(FLEET_PODS)
    for name, pod in pods.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts[str(sources_file.parent)]
        assert volumes[mount["name"]]["configMap"]["name"] == sources_map, name
        secret = volumes[mounts["/run/secrets"]["name"]]["secret"]
        assert secret["secretName"] == "permafrost-source-passwords", name
        assert mount["readOnly"] and mounts["/run/secrets"]["readOnly"], name
        env = {e["name"] for e in container["env"]}
        assert "DATABASE_URL" not in env, name  # the sources file names the servers
    # The example file is a SOURCES_FILE the services accept, once each password_file it names
    # is there: a key of the example Secret, a file under /run/secrets.
    examples = yaml.safe_load_all((BASE / "secrets.example.yaml").read_text())
    (passwords,) = [s for s in examples if s["metadata"]["name"] == "permafrost-source-passwords"]
    for secret_key, value in passwords["stringData"].items():
        (tmp_path / secret_key).write_text(value)
    text = configmap(objects, "permafrost-sources")[key].replace("/run/secrets/", f"{tmp_path}/")
    (tmp_path / key).write_text(text)
    fleet = read_sources_file(str(tmp_path / key), Settings.from_env({}))
    assert len(fleet.sources) >= 2
    named = yaml.safe_load(configmap(objects, "permafrost-sources")[key])["sources"]
    files = {Path(s["password_file"]) for s in named if "password_file" in s}
    assert {f.parent for f in files} == {Path("/run/secrets")}
    assert {f.name for f in files} == set(passwords["stringData"])


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
