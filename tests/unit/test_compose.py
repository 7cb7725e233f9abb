"""compose.yaml and its Prometheus: valid for the tools that run them (Debian's docker-compose,
promtool), and shaped as a fresh host needs: state on volumes, one image built once, every
image and plugin pinned, keys from .env, Grafana read-only, alerts on metrics that exist.

No Docker engine is needed. A missing tool fails the test (never skips): `bash .ci/deps.sh`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from swipeloop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
FLOWS = ("ingest", "features", "embeddings")
# variables compose reads from .env; a developer's own must not leak into these checks
ENV_NAMES = re.compile(r"SWIPELOOP_|CLICKHOUSE_|GRAFANA_CLICKHOUSE_")


def tool(name: str, package: str) -> str:
    """The tool's path; the test fails, saying what to install, when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `bash .ci/deps.sh` (Debian's {package})")
    return path


def run(*args: str, cwd: Path = ROOT) -> str:
    """stdout of a command that must succeed (its output in the failure otherwise)."""
    env = {k: v for k, v in os.environ.items() if not ENV_NAMES.match(k)}
    done = subprocess.run(
        args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def compose_config(env_file: Path) -> dict[str, Any]:
    """compose.yaml as docker-compose resolves it with this .env."""
    compose = tool("docker-compose", "docker-compose")
    run(compose, "-f", "compose.yaml", "--env-file", str(env_file), "config", "-q")
    config: dict[str, Any] = yaml.safe_load(
        run(compose, "-f", "compose.yaml", "--env-file", str(env_file), "config")
    )
    return config


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    """The stack as configured by .env.example."""
    return compose_config(ROOT / ".env.example")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment: dict[str, str] = service.get("environment") or {}
    return environment


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (as `config` writes them: source:target[:mode])."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_compose_is_valid_with_and_without_env(tmp_path: Path) -> None:
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    config = compose_config(ROOT / ".env.example")
    services = config["services"]
    # the keys of .env reach the API, and the admin key Prometheus's key step
    assert env_of(services["api"])["SWIPELOOP_APP_KEYS"] == example["SWIPELOOP_APP_KEYS"]
    assert env_of(services["api"])["SWIPELOOP_ADMIN_KEYS"] == example["SWIPELOOP_ADMIN_KEYS"]
    for name in ("JWT_SECRET", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):  # tokens too
        assert env_of(services["api"])[f"SWIPELOOP_{name}"] == example[f"SWIPELOOP_{name}"]
    api_settings = {k: v for k, v in env_of(services["api"]).items() if k.startswith("SWIPELOOP_")}
    assert Settings.from_env(api_settings).tokens  # the example's settings parse: tokens on
    key_step = services["prometheus-key"]
    assert env_of(key_step)["SWIPELOOP_ADMIN_KEYS"] == example["SWIPELOOP_ADMIN_KEYS"]
    assert (
        env_of(services["api"])["SWIPELOOP_CLICKHOUSE_PASSWORD"] == example["CLICKHOUSE_PASSWORD"]
    )
    assert env_of(services["clickhouse"])["CLICKHOUSE_PASSWORD"] == example["CLICKHOUSE_PASSWORD"]
    password = example["GRAFANA_CLICKHOUSE_PASSWORD"]
    assert env_of(services["grafana"])["GRAFANA_CLICKHOUSE_PASSWORD"] == password
    assert env_of(services["clickhouse"])["GRAFANA_CLICKHOUSE_PASSWORD"] == password
    # a fresh host with no .env at all still gets a complete file (demo passwords, no keys)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    bare = compose_config(empty)["services"]
    assert env_of(bare["api"])["SWIPELOOP_CLICKHOUSE_PASSWORD"]
    # .env holds secrets: never committed, never in the image's build context
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_state_lives_on_named_volumes(example: dict[str, Any]) -> None:
    services, volumes = example["services"], example["volumes"]
    flows = {
        name: service
        for name, service in services.items()
        if service.get("command", [])[:3] == ["swipeloop", "flows", "run"]
    }
    assert {s["command"][3] for s in flows.values()} == set(FLOWS)
    stores = set()
    for name, service in flows.items():
        data_dir = env_of(service)["SWIPELOOP_DATA_DIR"]
        # dataflows.runner.recovery_dir: DATA_DIR/recovery/<flow>-<epoch>
        source = mounts(service).get(f"{data_dir}/recovery")
        assert source in volumes, f"{name}: no named volume on {data_dir}/recovery"
        stores.add(source)
    assert len(stores) == len(flows), "each flow process keeps its own recovery store"
    # the model registry: written by the trainer, read by the api
    models = {mounts(services[name]).get("/data/models") for name in ("api", "trainer")}
    assert len(models) == 1 and models <= set(volumes), models


def test_one_image_built_once_and_every_tag_pinned(example: dict[str, Any]) -> None:
    services = example["services"]
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["init"], builders
    built = services["init"]["image"]
    users = [name for name, service in services.items() if service.get("image") == built]
    assert {"api", "trainer", *(f"dataflow-{flow}" for flow in FLOWS)} <= set(users)
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-\S+", base[1]), base
    plugins = env_of(services["grafana"])["GF_INSTALL_PLUGINS"].split(",")
    for plugin in plugins:
        assert re.fullmatch(r"[\w-]+ \d+\.\d+\.\d+", plugin.strip()), f"unpinned: {plugin}"


def test_dockerfile_installs_dependencies_before_the_code() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    at = {
        what: next(i for i, line in enumerate(lines) if marker in line)
        for what, marker in {
            "pyproject": "COPY pyproject.toml",
            "deps": "pip install --no-cache-dir -r",
            "code": "COPY swipeloop/",
            "package": "pip install --no-cache-dir --no-deps -e .",
        }.items()
    }
    assert at["pyproject"] < at["deps"] < at["code"] < at["package"], at


def test_clickhouse_credentials_stay_out_of_urls(example: dict[str, Any]) -> None:
    for name, service in example["services"].items():
        url = env_of(service).get("SWIPELOOP_CLICKHOUSE_URL")
        assert url is None or "@" not in url, f"{name}: credentials in {url}"


def test_grafana_reads_clickhouse_read_only(example: dict[str, Any]) -> None:
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())
    (datasource,) = source["datasources"]
    user = datasource["jsonData"]["username"]
    assert user != env_of(example["services"]["api"])["SWIPELOOP_CLICKHOUSE_USER"]
    mounted = mounts(example["services"]["clickhouse"])
    users_d = [Path(src) for target, src in mounted.items() if "/users.d/" in target]
    assert users_d, "no users.d file mounted into ClickHouse"
    config = ET.parse(users_d[0]).getroot()
    profile = config.findtext(f"users/{user}/profile")
    assert config.findtext(f"profiles/{profile}/readonly") == "1", profile
    assert config.find(f"users/{user}/password") is not None


def test_prometheus_config_rules_and_rule_tests(example: dict[str, Any], tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    # as the container sees it: the config, its rules beside it, and the key step's file
    prometheus = example["services"]["prometheus"]
    etc = tmp_path / "etc"
    for target, source in mounts(prometheus).items():
        if target.startswith("/etc/prometheus/") and Path(source).exists():
            place = etc / target.removeprefix("/etc/prometheus/")
            place.parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if Path(source).is_dir() else shutil.copy
            copy(source, place)
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    (api,) = [job for job in config["scrape_configs"] if job["job_name"] == "api"]
    key = etc / api["authorization"]["credentials_file"]
    key_volume = mounts(example["services"]["prometheus-key"])
    assert mounts(prometheus).get(str(Path("/etc/prometheus") / key.parent.name)) in (
        key_volume.values()
    ), "the key step writes where Prometheus reads"
    key.parent.mkdir(parents=True)
    key.write_text("an-admin-key")
    assert config["rule_files"], "no alert rules loaded"
    out = run(promtool, "check", "config", str(etc / "prometheus.yml"))
    assert "rule files found" in out and " 0 rule files" not in out, out
    run(promtool, "check", "rules", *map(str, sorted((GRAFANA / "rules").glob("*.yml"))))
    run(promtool, "test", "rules", str(GRAFANA / "rules-test.yml"))


def test_alerts_use_metrics_the_code_exports() -> None:
    from prometheus_client import REGISTRY

    import swipeloop.metrics  # noqa: F401  (registers the flows' and the feed's metrics)

    exported = {metric.name for metric in REGISTRY.collect()}
    # Litestar's request metrics (api/app.py: PrometheusConfig(prefix="swipeloop_api"))
    exported |= {"swipeloop_api_requests", "swipeloop_api_request_duration_seconds"}
    rules = yaml.safe_load((GRAFANA / "rules/swipeloop.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert len(names) >= 8, names
    for group in rules["groups"]:
        for rule in group["rules"]:
            for metric in re.findall(r"\bswipeloop_\w+", rule["expr"]):
                base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
                assert base in exported, f"{rule['alert']}: {metric} is not exported"


def test_no_reference_to_missing_documents() -> None:
    for path in (ROOT / "compose.yaml", ROOT / "bench/RESULTS.md", ROOT / "Dockerfile"):
        assert "DESIGN.md" not in path.read_text(), path


def test_the_cluster_profile_runs_three_brokers_and_each_flow_as_a_cluster(
    tmp_path: Path,
) -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    uncommented = [line.removeprefix("# ") for line in lines]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(uncommented) + "\n")
    config = compose_config(env_file)
    services = config["services"]
    brokers = [name for name in services if re.fullmatch(r"redpanda(-\d)?", name)]
    assert sorted(brokers) == ["redpanda", "redpanda-1", "redpanda-2"]
    for name in ("redpanda-1", "redpanda-2"):
        assert "--seeds redpanda:33145" in " ".join(services[name]["command"])
    bootstrap = env_of(services["api"])["SWIPELOOP_KAFKA_BOOTSTRAP"]
    assert bootstrap.split(",") == [f"{b}:9092" for b in sorted(brokers)]
    for flow in FLOWS:
        shapes = [
            Settings.from_env(env_of(services[s]))
            for s in (f"dataflow-{flow}", f"dataflow-{flow}-1")
        ]
        assert [s.flow_process_id for s in shapes] == [0, 1]
        assert {s.flow_processes for s in shapes} == {2}
        assert shapes[0].flow_cluster_addresses == shapes[1].flow_cluster_addresses
        assert [a.split(":")[0] for a in shapes[0].flow_cluster_addresses] == [
            f"dataflow-{flow}",
            f"dataflow-{flow}-1",
        ]
        own = [
            mounts(services[s])["/data/recovery"]
            for s in (f"dataflow-{flow}", f"dataflow-{flow}-1")
        ]
        assert len(set(own)) == 2, "each process keeps its own recovery partitions"
        assert shapes[0].replication == (3, 2)


def test_the_default_stack_is_one_broker_and_one_process_per_flow(example: dict[str, Any]) -> None:
    services = example["services"]
    cluster_only = {name for name, service in services.items() if service.get("profiles")}
    assert cluster_only == {"redpanda-1", "redpanda-2", *(f"dataflow-{f}-1" for f in FLOWS)}
    assert all(services[name]["profiles"] == ["cluster"] for name in cluster_only)
    for flow in FLOWS:
        settings = Settings.from_env(env_of(services[f"dataflow-{flow}"]))
        assert settings.flow_processes == 1
        assert settings.replication == (1, 1)


def test_prometheus_scrapes_every_flow_process_and_the_console_reads_it(
    example: dict[str, Any],
) -> None:
    services = example["services"]
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    scraped = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            scraped |= set(static["targets"])
        for found in job.get("dns_sd_configs", []):
            scraped |= {f"{name}:{found['port']}" for name in found["names"]}
    flows = [name for name, s in services.items() if "flows" in s.get("command", [])]
    assert len(flows) == 2 * len(FLOWS), flows
    for name in flows:
        port = env_of(services[name])["SWIPELOOP_FLOW_API_PORT"]
        assert f"{name}:{port}" in scraped, f"Prometheus does not scrape {name}'s /metrics"
    url = Settings.from_env(env_of(services["api"])).prometheus_url
    ports = services["prometheus"]["ports"]
    assert url == "http://prometheus:9090" and any(p["target"] == 9090 for p in ports), url
