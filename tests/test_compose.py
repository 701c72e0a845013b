"""docker-compose.yml stays valid for users with Docker (checked without an engine), and exposes only
what users need: the data stores on an internal network, the retrieval service behind its token,
RabbitMQ's management UI on loopback with credentials from the environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "PARLEY_SECRET_KEY": "x" * 44, "PARLEY_SERVICE_TOKEN": "t" * 43}
    result = subprocess.run([*command, "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_compose_commands_exist_in_the_cli() -> None:
    from cli import main

    text = (ROOT / "docker-compose.yml").read_text()
    for command in ("migrate", "retrieval", "gateway", "worker"):
        assert f'command: ["{command}"' in text
    assert "migrate" in main.commands


def _compose() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_only_the_gateway_and_a_loopback_management_ui_are_published() -> None:
    # Given the compose file as Docker reads it (anchors and merge keys resolved)
    compose = _compose()
    services = compose["services"]
    # Then the internal network has no way out, and the data stores sit on it alone
    assert compose["networks"]["internal"] == {"internal": True}
    for name in ("postgres", "weaviate"):
        assert services[name]["networks"] == ["internal"] and "ports" not in services[name], name
    assert "ports" not in services["retrieval"] and "ports" not in services["migrate"]
    # And what is published: the gateway's port, and RabbitMQ's management UI on 127.0.0.1 only (AMQP not at all)
    published = {name: service.get("ports", []) for name, service in services.items() if service.get("ports")}
    assert published == {"gateway": ["8080:8080"], "rabbitmq": ["127.0.0.1:15672:15672"]}
    assert services["rabbitmq"]["networks"] == ["internal", "management"]  # its own network, for the publish only


def test_credentials_come_from_the_environment() -> None:
    services = _compose()["services"]
    # RabbitMQ's account (the management UI's login) and the URL every process uses are the same variables
    rabbit = services["rabbitmq"]["environment"]
    assert (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"]) == ("${RABBITMQ_USER:-parley}", "${RABBITMQ_PASSWORD:-parley}")
    for name in ("gateway", "retrieval", "documents-worker", "catalog-worker", "migrate"):
        assert services[name]["environment"]["PARLEY_AMQP_URL"] == \
            "amqp://${RABBITMQ_USER:-parley}:${RABBITMQ_PASSWORD:-parley}@${PARLEY_AMQP_HOSTS:-rabbitmq:5672}/", name
    # And the gateway and the retrieval service share one required service token
    tokens = {name: services[name]["environment"].get("PARLEY_SERVICE_TOKEN") for name in ("gateway", "retrieval")}
    assert set(tokens.values()) == {"${PARLEY_SERVICE_TOKEN:?set PARLEY_SERVICE_TOKEN to a long random string}"}


def test_compose_refuses_to_start_without_a_service_token() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed here")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "PARLEY_SECRET_KEY": "x" * 44}
    result = subprocess.run([*command, "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "set PARLEY_SERVICE_TOKEN" in result.stderr


def test_the_cluster_profile_is_three_nodes_joining_the_first_with_one_cookie() -> None:
    # Given the compose file's `cluster` profile
    services = _compose()["services"]
    nodes = {name: services[name] for name in ("rabbitmq", "rabbitmq-2", "rabbitmq-3")}
    # Then the two extra nodes exist only in that profile; the first one always runs
    assert "profiles" not in nodes["rabbitmq"]
    assert nodes["rabbitmq-2"]["profiles"] == nodes["rabbitmq-3"]["profiles"] == ["cluster"]
    # And each node has a fixed host name (its node name, stored with its data) and a volume of its own
    assert [n["hostname"] for n in nodes.values()] == list(nodes)
    volumes = [n["volumes"][0].split(":")[0] for n in nodes.values()]
    assert len(set(volumes)) == 3
    # And they share the Erlang cookie (the server's and the CLI healthcheck's) and the broker account
    assert nodes["rabbitmq"]["environment"] == nodes["rabbitmq-2"]["environment"] == nodes["rabbitmq-3"]["environment"]
    env = nodes["rabbitmq"]["environment"]
    assert "-setcookie ${RABBITMQ_ERLANG_COOKIE" in env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    assert env["RABBITMQ_CTL_ERL_ARGS"] == env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    # And the two join the first through classic peer discovery, started once it is healthy
    for name in ("rabbitmq-2", "rabbitmq-3"):
        assert nodes[name]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
        mount = next(v for v in nodes[name]["volumes"] if "cluster.conf" in v)
        source, target, _ = mount.split(":")
        assert target.startswith("/etc/rabbitmq/conf.d/") and (ROOT / source).is_file()
    conf = (ROOT / "docs" / "rabbitmq" / "cluster.conf").read_text()
    listed = sorted(line.split("=")[1].strip() for line in conf.splitlines() if ".classic_config.nodes." in line)
    assert listed == ["rabbit@rabbitmq", "rabbit@rabbitmq-2", "rabbit@rabbitmq-3"]
    # And the Parley processes take the host list and queue type from the environment (quorum for a cluster)
    parley = services["gateway"]["environment"]
    assert parley["PARLEY_AMQP_QUEUE_TYPE"] == "${PARLEY_AMQP_QUEUE_TYPE:-classic}"
    # And the example in the header names every node, and is a URL the settings accept
    from parley.amqp_hosts import split_amqp_url

    header = (ROOT / "docker-compose.yml").read_text()
    hosts = header.split("PARLEY_AMQP_HOSTS=", 1)[1].split()[0]
    assert [h.split(":")[0] for h in hosts.split(",")] == list(nodes)
    assert len(split_amqp_url(f"amqp://parley:parley@{hosts}/")) == 3
