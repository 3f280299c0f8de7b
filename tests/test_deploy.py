"""docker-compose.yml stays valid: there is no Docker engine here, so its structure is checked."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_has_redis_with_aof_and_the_server():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis, triage = compose["services"]["redis"], compose["services"]["triage"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]
    assert triage["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis://redis:6379/0" in triage["command"] and triage["deploy"]["replicas"] >= 2
    assert (ROOT / triage["build"] / "Dockerfile").exists()
    # listening beyond loopback, the replicas need both credentials (they refuse to start without)
    assert triage["environment"]["TRIAGE_USERS"] == "/run/triage/users.json"
    assert "./deploy/secrets:/run/triage:ro" in triage["volumes"] and "TRIAGE_TOKEN" in triage["environment"]


def test_replicas_sit_behind_a_websocket_aware_proxy():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("nginx:") and proxy["ports"] == ["127.0.0.1:8765:8765"]
    conf_path = proxy["volumes"][0].split(":")[0]
    conf = (ROOT / conf_path).read_text()
    assert "server triage:8765 resolve;" in conf  # every replica, re-resolved as they come and go
    assert "proxy_set_header Upgrade $http_upgrade;" in conf and "proxy_http_version 1.1;" in conf
    assert "ports" not in compose["services"]["triage"]  # replicas are reached through the proxy only


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_when_available():
    r = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0 and "unknown" in (r.stderr + r.stdout).lower():
        pytest.skip("docker compose plugin not available")
    assert r.returncode == 0, r.stderr
