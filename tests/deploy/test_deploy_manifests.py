"""The deployment manifests against the code they deploy.

Docker and Kubernetes are not available where the suite runs, so the
manifests are checked statically, against facts read from the code itself
rather than copied into this file:

- every command line a container runs parses with the CLI's own argparse
  parser (``switchboard.cli``), and every actor it names is built in
  (``switchboard.runner.BUILTIN_ACTORS``);
- every probe or health-check URL names a GET route of what the container
  serves, on the port its settings give it: the gateway's router (built by
  ``gateway.server.Gateway.router``, no I/O) on ``SWITCHBOARD_PORT``, or an
  actor's metrics server (asked over loopback: it has no route table) on
  ``SWITCHBOARD_METRICS_PORT``;
- every published or declared port is that port;
- every ``SWITCHBOARD_*``/``TWILIO_*``/``ANTHROPIC_*`` variable set is one
  ``Settings.from_env`` reads (recorded by handing it a mapping that notes
  each lookup), its value parses, and docs/OPERATIONS.md documents it.

The checkers return a list of problems; the negative tests feed them bogus
manifests to show a wrong flag, path, port or variable is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from bus.memory import MemoryBus
from gateway.drain import HANDOVER_TIMEOUT_S
from gateway.server import Gateway
from switchboard import cli_parser, runner
from switchboard.metrics_http import fetch, serve_metrics
from switchboard.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OUR_PREFIXES = ("SWITCHBOARD_", "TWILIO_", "ANTHROPIC_")
# The image's ENTRYPOINT; a container that runs anything else is not ours.
PROGRAM = "switchboard"
_LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost)(?::(\d+))?(/[^\s'\"]*)?")


# --------------------------------------------------------------- the code's facts


class _RecordingEnv(Mapping[str, str]):
    """An environment that records every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class CodeFacts:
    parser: argparse.ArgumentParser
    actors: tuple[str, ...]
    get_routes: frozenset[str]  # the gateway's, on SWITCHBOARD_PORT
    actor_routes: frozenset[str]  # an actor's, on SWITCHBOARD_METRICS_PORT
    variables: frozenset[str]
    documented: str


def _gateway_get_routes() -> frozenset[str]:
    gateway = Gateway(MemoryBus(), Settings().gateway_config())
    router = gateway.router()
    return frozenset(path for path, methods in router.routes.items() if "GET" in methods)


def _paths_in_manifests() -> set[str]:
    text = "\n".join(p.read_text() for p in [*DEPLOY.glob("*.yaml"), *K8S.glob("*.yaml")])
    paths = set(re.findall(r"path:\s*(/\S*)", text))
    return paths | {path or "/" for _, path in _LOCAL_URL.findall(text)}


def _actor_get_routes(candidates: set[str]) -> frozenset[str]:
    """The candidate paths an actor's metrics server answers with 200.

    Its handler matches paths inline (no router to read), so ask it: serve
    it on a loopback port and GET each candidate.
    """

    async def probe() -> frozenset[str]:
        found = set()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, "127.0.0.1", 0, [])
            for path in sorted(candidates):
                with trio.fail_after(5):
                    status, _ = await fetch("127.0.0.1", port, path)
                if status == 200:
                    found.add(path)
            nursery.cancel_scope.cancel()
        return frozenset(found)

    return trio.run(probe)


def _variables_read() -> frozenset[str]:
    recorder = _RecordingEnv({})
    Settings.from_env(recorder)
    return frozenset(recorder.read)


@pytest.fixture(scope="module")
def facts() -> CodeFacts:
    return CodeFacts(
        parser=cli_parser.build_parser(),
        actors=tuple(runner.BUILTIN_ACTORS),
        get_routes=_gateway_get_routes(),
        actor_routes=_actor_get_routes(_paths_in_manifests() | {"/healthz", "/metrics"}),
        variables=_variables_read(),
        documented=(ROOT / "docs" / "OPERATIONS.md").read_text(),
    )


# ------------------------------------------------------------------- checkers


def parse_argv(argv: list[str], facts: CodeFacts) -> tuple[argparse.Namespace | None, list[str]]:
    """``switchboard ARGV`` (argv without the program) parsed, or the problems."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = facts.parser.parse_args(argv)
    except SystemExit:
        message = err.getvalue().strip().splitlines()[-1:] or ["?"]
        return None, [f"switchboard {shlex.join(argv)}: {message[0]}"]
    if args.command == "actor" and args.name not in facts.actors:
        return None, [f"switchboard {shlex.join(argv)}: no built-in actor {args.name!r}"]
    return args, []


def check_argv(argv: list[str], facts: CodeFacts) -> list[str]:
    return parse_argv(argv, facts)[1]


@dataclass(frozen=True)
class Serves:
    """What HTTP a container's process serves, by its role and settings."""

    what: str
    port: int | None  # None: no HTTP at all
    routes: frozenset[str]


def serves(args: argparse.Namespace | None, settings: Settings, facts: CodeFacts) -> Serves:
    if args is not None and args.command == "actor":
        # ``0`` picks a free port: nothing outside can know it.
        port = settings.metrics_port or None
        return Serves("the actor's metrics server", port, facts.actor_routes)
    return Serves("the gateway", settings.port, facts.get_routes)


def check_env(where: str, env: Mapping[str, str], facts: CodeFacts) -> tuple[Settings, list[str]]:
    """Problems with the variables a container sets; and the settings they give."""
    problems: list[str] = []
    recorder = _RecordingEnv(env)
    try:
        settings = Settings.from_env(recorder)
    except SettingsError as exc:
        problems.append(f"{where}: {exc}")
        settings = Settings.from_env({k: v for k, v in env.items() if k not in str(exc)})
    known = facts.variables | recorder.read
    for name in env:
        if not name.startswith(OUR_PREFIXES):
            continue
        if name not in known:
            problems.append(f"{where}: {name} is not a variable Settings.from_env reads")
        elif f"`{name}`" not in facts.documented:
            problems.append(f"{where}: {name} is not documented in docs/OPERATIONS.md")
    return settings, problems


def check_url(where: str, url_text: str, target: Serves) -> list[str]:
    """Problems with every local URL in ``url_text`` (a probe or health check)."""
    problems: list[str] = []
    found = _LOCAL_URL.findall(url_text)
    if not found:
        problems.append(f"{where}: no local URL in {url_text!r}")
    for url_port, path in found:
        problems += check_http(where, path or "/", int(url_port or 80), target)
    return problems


def check_http(where: str, path: str, used_port: int, target: Serves) -> list[str]:
    if target.port is None:
        return [f"{where}: {target.what} serves no HTTP (is SWITCHBOARD_METRICS_PORT set?)"]
    problems = []
    if path.partition("?")[0] not in target.routes:
        problems.append(
            f"{where}: GET {path} is not a route of {target.what} "
            f"({', '.join(sorted(target.routes))})"
        )
    if used_port != target.port:
        problems.append(f"{where}: port {used_port}, but {target.what} listens on {target.port}")
    return problems


def check_port(where: str, port: int, target: Serves) -> list[str]:
    if port != target.port:
        return [f"{where}: port {port}, but {target.what} listens on {target.port}"]
    return []


def _interpolate(value: Any) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` with nothing set in the shell."""

    def one(match: re.Match[str]) -> str:
        return match.group(2) or ""

    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", one, str(value))


def _compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(k): _interpolate(v) for k, v in raw.items()}


def _argv_list(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"not exec form: {rest}"
    return [str(v) for v in value]


@dataclass(frozen=True)
class Image:
    """What the image built by deploy/Dockerfile runs by default."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    exposed: list[int]


def read_image() -> Image:
    instructions = _dockerfile_instructions((DEPLOY / "Dockerfile").read_text())
    # Only the final stage is the image.
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    exposed: list[int] = []
    for word, rest in instructions[last_from:]:
        if word == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
        elif word == "CMD":
            cmd = _exec_form(rest)
        elif word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
        elif word == "EXPOSE":
            exposed += [int(p.split("/")[0]) for p in rest.split()]
    return Image(entrypoint, cmd, env, exposed)


def image_problems(image: Image, facts: CodeFacts) -> list[str]:
    problems = []
    if image.entrypoint != [PROGRAM]:
        problems.append(f"Dockerfile: ENTRYPOINT {image.entrypoint}, want [{PROGRAM!r}]")
    args, argv_problems = parse_argv(image.cmd, facts)
    problems += argv_problems
    settings, env_problems = check_env("Dockerfile ENV", image.env, facts)
    problems += env_problems
    # EXPOSE documents the default role's port (CMD).
    target = serves(args, settings, facts)
    for port in image.exposed:
        problems += check_port(f"Dockerfile EXPOSE {port}", port, target)
    return problems


def compose_problems(doc: Mapping[str, Any], image: Image, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    for name, service in doc["services"].items():
        if not str(service.get("image", "")).startswith(PROGRAM):
            continue  # redis and friends
        where = f"compose {name}"
        entrypoint = _argv_list(service.get("entrypoint")) or image.entrypoint
        if entrypoint != [PROGRAM]:
            problems.append(f"{where}: entrypoint {entrypoint}, want [{PROGRAM!r}]")
        argv = _argv_list(service.get("command")) or image.cmd
        args, argv_problems = parse_argv(argv, facts)
        problems += [f"{where}: {p}" for p in argv_problems]
        settings, env_problems = check_env(where, {**image.env, **_compose_env(service)}, facts)
        problems += env_problems
        target = serves(args, settings, facts)
        for mapping in service.get("ports") or []:
            port = int(str(mapping).rsplit(":", 1)[-1].split("/")[0])
            problems += check_port(f"{where} publishes container port {port}", port, target)
        test = (service.get("healthcheck") or {}).get("test")
        if test:
            text = test if isinstance(test, str) else " ".join(str(t) for t in test)
            problems += check_url(f"{where} healthcheck", text, target)
    return problems


def load_k8s() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc.setdefault("_file", path.name)
                docs.append(doc)
    return docs


def _k8s_env(
    container: Mapping[str, Any], config_maps: Mapping[str, dict[str, str]]
) -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref is not None:
            if ref not in config_maps:
                problems.append(f"envFrom names ConfigMap {ref!r}, which no manifest defines")
            env.update(config_maps.get(ref, {}))
    for item in container.get("env") or []:
        # A secret's value is unknown here; a placeholder still has the right shape.
        env[item["name"]] = str(item.get("value", "secret-placeholder"))
    return env, problems


def _named_ports(container: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if "name" in p}


def _probe_problems(
    where: str,
    probe: Mapping[str, Any],
    container: Mapping[str, Any],
    target: Serves,
    facts: CodeFacts,
) -> list[str]:
    if "httpGet" in probe:
        get = probe["httpGet"]
        used = get.get("port")
        named = _named_ports(container)
        if isinstance(used, str):
            if used not in named:
                return [f"{where}: port {used!r} is not a named port of the container"]
            used = named[used]
        return check_http(where, str(get.get("path", "/")), int(used), target)
    if "exec" in probe:
        argv = [str(a) for a in probe["exec"]["command"]]
        if argv[0] == PROGRAM:
            return [f"{where}: {p}" for p in check_argv(argv[1:], facts)]
        text = " ".join(argv)
        return check_url(where, text, target) if _LOCAL_URL.search(text) else []
    return []


def k8s_problems(docs: list[dict[str, Any]], image: Image, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    config_maps = {
        d["metadata"]["name"]: {str(k): str(v) for k, v in (d.get("data") or {}).items()}
        for d in docs
        if d["kind"] == "ConfigMap"
    }
    for doc in docs:
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container["image"].partition(":")[0].rsplit("/", 1)[-1] != PROGRAM:
                continue
            where = f"{doc['_file']} {doc['metadata']['name']}/{container['name']}"
            entrypoint = _argv_list(container.get("command")) or image.entrypoint
            if entrypoint != [PROGRAM]:
                problems.append(f"{where}: command {entrypoint}, want [{PROGRAM!r}]")
            argv = _argv_list(container.get("args")) or image.cmd
            args, argv_problems = parse_argv(argv, facts)
            problems += [f"{where}: {p}" for p in argv_problems]
            env, ref_problems = _k8s_env(container, config_maps)
            problems += [f"{where}: {p}" for p in ref_problems]
            settings, env_problems = check_env(where, {**image.env, **env}, facts)
            problems += env_problems
            target = serves(args, settings, facts)
            for declared in container.get("ports") or []:
                port = int(declared["containerPort"])
                problems += check_port(f"{where} containerPort {port}", port, target)
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                if kind in container:
                    problems += _probe_problems(
                        f"{where} {kind}", container[kind], container, target, facts
                    )
            for hook in ("preStop", "postStart"):
                handler = (container.get("lifecycle") or {}).get(hook)
                if handler:
                    problems += _probe_problems(
                        f"{where} {hook}", handler, container, target, facts
                    )
    return problems


# ---------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def image() -> Image:
    return read_image()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return load_k8s()


def test_the_code_facts_are_found(facts: CodeFacts) -> None:
    # If introspection silently found nothing, every other check would pass.
    assert {"/healthz", "/readyz", "/metrics"} <= facts.get_routes
    assert {"SWITCHBOARD_PORT", "SWITCHBOARD_REDIS_URL", "TWILIO_AUTH_TOKEN"} <= facts.variables
    assert {"ANTHROPIC_API_KEY"} <= facts.variables
    assert {"conversation", "llm"} <= set(facts.actors)
    assert {"/healthz", "/readyz", "/metrics"} <= facts.actor_routes
    assert "/twiml" not in facts.actor_routes


def test_dockerfile(image: Image, facts: CodeFacts) -> None:
    assert image_problems(image, facts) == []
    assert image.exposed, "the image should EXPOSE the gateway port"
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M), "the image must not run as root"


def test_compose(compose: dict[str, Any], image: Image, facts: CodeFacts) -> None:
    assert compose_problems(compose, image, facts) == []
    services = compose["services"]
    assert {"redis", "gateway", "conversation", "llm"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    ours = {name: s for name, s in services.items() if name != "redis"}
    assert len({s["image"] for s in ours.values()}) == 1, "one image for every role"
    for role in ("conversation", "llm"):
        # `--scale` needs containers without fixed names or host ports.
        assert "container_name" not in services[role]
        assert not services[role].get("ports")
    gateway_env = _compose_env(services["gateway"])
    assert gateway_env["SWITCHBOARD_HOST"] == "0.0.0.0"
    assert "SWITCHBOARD_GATEWAY_ID" not in gateway_env, "a fixed id breaks scaling gateways"
    for name, service in ours.items():
        env = _compose_env(service)
        assert env["SWITCHBOARD_REDIS_URL"] == "redis://redis:6379/0", name
        assert "redis" in service["depends_on"], name
    for role in ("conversation", "llm", "telemetry"):
        assert services[role].get("healthcheck"), f"{role}: probe its /healthz"
    assert "TWILIO_AUTH_TOKEN" in services["gateway"]["environment"]
    assert "SWITCHBOARD_PUBLIC_URL" in services["gateway"]["environment"]
    assert "ANTHROPIC_API_KEY" in services["llm"]["environment"]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "namespace" not in kustomization, "namespace-agnostic: apply into the current one"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_kubernetes(k8s: list[dict[str, Any]], image: Image, facts: CodeFacts) -> None:
    assert k8s_problems(k8s, image, facts) == []
    for doc in k8s:
        assert "namespace" not in doc["metadata"], f"{doc['_file']}: namespace-agnostic"
    deployments = _by_kind(k8s, "Deployment")
    roles = {"gateway", "conversation", "llm"}
    assert {f"switchboard-{r}" for r in roles} <= set(deployments)
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name

    gateway = deployments["switchboard-gateway"]["spec"]["template"]["spec"]
    (container,) = gateway["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The process drains itself on SIGTERM; the grace period must cover it.
    assert "lifecycle" not in container, "the gateway drains in the process, not in a hook"
    config = _by_kind(k8s, "ConfigMap")["switchboard"]["data"]
    drain_s = float(config["SWITCHBOARD_DRAIN_DEADLINE_S"])
    grace = gateway["terminationGracePeriodSeconds"]
    assert grace >= drain_s + HANDOVER_TIMEOUT_S, "calls need time to drain and hand over"
    secrets = {
        item["valueFrom"]["secretKeyRef"]["name"]
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
        for item in c.get("env") or []
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert secrets == {"switchboard-secrets"}

    services = _by_kind(k8s, "Service")
    gateway_labels = deployments["switchboard-gateway"]["spec"]["template"]["metadata"]["labels"]
    service = services["switchboard-gateway"]
    assert service["spec"]["selector"].items() <= gateway_labels.items()
    named = _named_ports(container)
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (target in named) if isinstance(target, str) else target in named.values()

    hpas = _by_kind(k8s, "HorizontalPodAutoscaler")
    scaled = set()
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        assert "replicas" not in deployments[target]["spec"], "the HPA owns the replica count"
        assert any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
        requests = deployments[target]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert "cpu" in requests["requests"], "CPU utilization needs a CPU request"
        scaled.add(target)
    assert {"switchboard-conversation", "switchboard-llm"} <= scaled
    # Telemetry joins in memory: exactly one, never two during a rollout.
    telemetry = deployments["switchboard-telemetry"]["spec"]
    assert telemetry["replicas"] == 1 and telemetry["strategy"]["type"] == "Recreate"
    assert "switchboard-telemetry" not in scaled
    for role in ("conversation", "llm", "telemetry"):
        (actor,) = deployments[f"switchboard-{role}"]["spec"]["template"]["spec"]["containers"]
        assert actor["livenessProbe"]["httpGet"]["path"] == "/healthz", role

    budgets = _by_kind(k8s, "PodDisruptionBudget")
    covered = {
        name
        for name, d in deployments.items()
        for pdb in budgets.values()
        if pdb["spec"]["selector"]["matchLabels"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert {f"switchboard-{r}" for r in roles} <= covered


# ------------------------------------------------------------- negative checks


def test_the_checkers_catch_bogus_compose(
    compose: dict[str, Any], image: Image, facts: CodeFacts
) -> None:
    bogus = copy.deepcopy(compose)
    services = bogus["services"]
    services["llm"]["command"] = ["actor", "bogus"]
    services["conversation"]["command"] = ["actor", "conversation", "--bogus-flag"]
    services["gateway"]["environment"]["SWITCHBOARD_NO_SUCH_SETTING"] = "1"
    services["gateway"]["ports"] = ["8080:9090"]
    services["gateway"]["healthcheck"]["test"] = ["CMD", "curl", "http://127.0.0.1:8080/nope"]
    # The gateway's webhook is not a route an actor serves.
    services["telemetry"]["healthcheck"] = {"test": "curl -f http://127.0.0.1:9090/twiml"}
    problems = "\n".join(compose_problems(bogus, image, facts))
    assert "no built-in actor 'bogus'" in problems
    assert "--bogus-flag" in problems
    assert "SWITCHBOARD_NO_SUCH_SETTING is not a variable" in problems
    assert "publishes container port 9090: port 9090, but the gateway listens on 8080" in problems
    assert "GET /nope is not a route of the gateway" in problems
    assert "GET /twiml is not a route of the actor's metrics server" in problems


def test_the_checkers_catch_bogus_kubernetes(
    k8s: list[dict[str, Any]], image: Image, facts: CodeFacts
) -> None:
    bogus = copy.deepcopy(k8s)
    deployments = _by_kind(bogus, "Deployment")
    gateway = deployments["switchboard-gateway"]["spec"]["template"]["spec"]["containers"][0]
    gateway["args"] = ["gatewy"]
    gateway["readinessProbe"]["httpGet"]["path"] = "/ready"
    gateway["livenessProbe"]["httpGet"]["port"] = 9999
    gateway["env"].append({"name": "TWILIO_NO_SUCH_TOKEN", "value": "x"})
    config = _by_kind(bogus, "ConfigMap")["switchboard"]
    config["data"]["SWITCHBOARD_PARTITIONS"] = "many"
    llm = deployments["switchboard-llm"]["spec"]["template"]["spec"]["containers"][0]
    llm["livenessProbe"]["httpGet"]["port"] = 8080  # the gateway's port, not the actor's
    telemetry = deployments["switchboard-telemetry"]["spec"]["template"]["spec"]["containers"][0]
    telemetry["env"] = []  # no SWITCHBOARD_METRICS_PORT: nothing to probe
    problems = "\n".join(k8s_problems(bogus, image, facts))
    assert "invalid choice: 'gatewy'" in problems
    assert "GET /ready is not a route of the gateway" in problems
    assert "port 9999, but the gateway listens on 8080" in problems
    assert (
        "llm livenessProbe: port 8080, but the actor's metrics server listens on 9090" in problems
    )
    assert "telemetry livenessProbe: the actor's metrics server serves no HTTP" in problems
    assert "TWILIO_NO_SUCH_TOKEN is not a variable" in problems
    assert "SWITCHBOARD_PARTITIONS must be an integer" in problems


def test_the_checkers_catch_a_bogus_image(image: Image, facts: CodeFacts) -> None:
    bogus = Image(["python"], ["serve"], {"SWITCHBOARD_PORT": "8080"}, [8081])
    problems = "\n".join(image_problems(bogus, facts))
    assert "ENTRYPOINT ['python']" in problems
    assert "invalid choice: 'serve'" in problems
    assert "EXPOSE 8081" in problems
