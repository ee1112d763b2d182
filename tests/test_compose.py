"""docker-compose.yml and the LocalStack init hook, checked without Docker.

No Docker engine is needed: the compose file is parsed with PyYAML and its
``${VAR:-default}`` interpolation resolved here, and the shell snippets it and
``localstack/init/ready.d`` hold are run for real with the container tools
(``mc``, ``awslocal``, ``curl``, ``pip``, ``modelstorage``) replaced by small
shims on PATH. The ``awslocal`` shim talks to moto's S3 server, so the LocalStack
script really creates (and then leaves alone) a bucket.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from storage import open_storage
from storage import registry as storage_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
READY_DIR = REPO / "localstack" / "init" / "ready.d"
LOCALSTACK_SCRIPT = READY_DIR / "create-bucket.sh"
README = REPO / "README.md"

# Where the compose file mounts the hook folder, and what LocalStack runs from there.
LOCALSTACK_READY_MOUNT = "/etc/localstack/init/ready.d"
STORE_ENV_PREFIXES = ("MINIO_", "AWS_", "FEDN_", "MODELSTORAGE_")
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly"}


# -- compose interpolation --------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of one string: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        if op in (":?", "?") and (not env.get(name) if op == ":?" else name not in env):
            raise KeyError(f"{name} is required: {arg}")
        return env.get(name, "")

    return _INTERPOLATION.sub(substitute, value)


def resolve(node: Any, env: dict[str, str]) -> Any:
    """The whole document as ``docker compose config`` would see it with ``env`` as the host environment."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def host_variables(node: Any) -> list[re.Match[str]]:
    """Every ``$VAR``/``${VAR...}`` the host environment would fill in (``$$`` is the container's)."""
    if isinstance(node, str):
        return [m for m in _INTERPOLATION.finditer(node) if not m["escaped"]]
    if isinstance(node, list):
        return [m for item in node for m in host_variables(item)]
    if isinstance(node, dict):
        return [m for value in node.values() for m in host_variables(value)]
    return []


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)  # YAML anchors (&x / *x) are resolved here


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file with nothing set on the host: every development default in force."""
    return resolve(raw_compose, {})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def service_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return {str(k): "" if v is None else str(v) for k, v in environment.items()}


def container_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: entrypoint followed by command (both in exec form or shell-split)."""

    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    return as_list(service.get("entrypoint")) + as_list(service.get("command"))


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """``registry/repo:tag@sha256:...`` -> (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each entry of ``ports``."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            result.append((entry.get("host_ip", ""), int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/", 1)[0].split(":")
        if len(parts) == 1:
            parts = ["", parts[0], parts[0]]
        elif len(parts) == 2:
            parts = ["", *parts]
        result.append((parts[0], int(parts[1]), int(parts[2])))
    return result


# -- shims for the tools the containers have ------------------------------------------------------

RECORDER = """
import json, os, sys
with open(os.environ["SHIM_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({"cmd": os.path.basename(sys.argv[0]), "argv": sys.argv[1:], "env": dict(os.environ)}) + "\\n")
"""

# awslocal is `aws --endpoint-url=http://localhost:4566`; this shim does the two calls the
# LocalStack script may make with boto3 against SHIM_S3_ENDPOINT, with the AWS CLI's exit
# codes, and refuses anything else so the script cannot drift from what is tested here.
AWSLOCAL = """
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

args = sys.argv[1:]
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["SHIM_S3_ENDPOINT"],
    region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],          # KeyError: the script set none
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
)
try:
    if args[:2] == ["s3api", "head-bucket"] and len(args) == 4 and args[2] == "--bucket":
        s3.head_bucket(Bucket=args[3])
    elif args[:2] == ["s3", "mb"] and len(args) == 3 and args[2].startswith("s3://"):
        bucket = args[2][len("s3://"):].rstrip("/")
        region = s3.meta.region_name
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **extra)
        print(f"make_bucket: {bucket}")
    else:
        print(f"awslocal shim: unsupported call {args}", file=sys.stderr)
        sys.exit(2)
except ClientError as exc:
    print(f"An error occurred ({exc.response['Error'].get('Code')})", file=sys.stderr)
    sys.exit(254 if args[0] == "s3api" else 1)
except BotoCoreError as exc:
    print(str(exc), file=sys.stderr)
    sys.exit(255)
"""

CURL = """
body = os.environ.get("SHIM_CURL_BODY")
if body is None:
    sys.exit(7)  # curl: failed to connect
sys.stdout.write(body)
"""


class Shims:
    """A folder of fake commands put first on PATH; each call is logged as JSON lines."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "calls.jsonl"
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, body: str = "") -> None:
        """``name`` on PATH: logs its call, then runs ``body`` (Python)."""
        path = self.folder / name
        # Shims that need only the standard library skip site-packages (-S): they start 5x faster.
        flags = "" if "import boto3" in body else " -S"
        path.write_text(f"#!{sys.executable}{flags}\n{RECORDER}{body}", encoding="utf-8")
        path.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": f"{self.folder}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SHIM_LOG": str(self.log),
            "HOME": str(self.folder),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            **extra,
        }

    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]
        self.log.unlink()
        return [c for c in calls if cmd is None or c["cmd"] == cmd]


def run(argv: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def run_localstack_script(shims: Shims, endpoint_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    shims.add("awslocal", AWSLOCAL)
    # Executed directly, as LocalStack does: this also needs the mode bit and the shebang.
    return run([str(LOCALSTACK_SCRIPT)], shims.env(SHIM_S3_ENDPOINT=endpoint_url, **env))


# -- the services ---------------------------------------------------------------------------------


def test_the_stack_has_minio_its_bucket_init_localstack_and_a_combiner(services):
    assert {"minio", "minio-init", "localstack", "combiner"} <= set(services)


@pytest.mark.parametrize("name", ["minio", "minio-init", "localstack", "combiner"])
def test_every_image_is_pinned(services, name):
    reference = services[name]["image"]
    image, tag, digest = split_image(reference)
    assert tag, f"{name}: {reference} has no tag"
    assert tag.lower() not in FLOATING_TAGS, f"{name}: {reference} floats"
    if digest is not None:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: malformed digest in {reference}"
    if image.rsplit("/", 1)[-1] in ("minio", "mc"):
        # Docker Hub's minio/minio and minio/mc are gone (September 2026); quay.io still serves them.
        assert image.startswith("quay.io/minio/"), f"{name}: {reference} is not from a registry that serves MinIO"
        assert tag.startswith("RELEASE."), f"{name}: MinIO images are pinned to a RELEASE tag"


def test_localstack_starts_without_an_auth_token(services):
    localstack = services["localstack"]
    image, tag, _ = split_image(localstack["image"])
    assert image in ("localstack/localstack", "docker.io/localstack/localstack")
    if "LOCALSTACK_AUTH_TOKEN" not in service_env(localstack):
        # From 4.15 / 2026.03.0 on the image exits at start without LOCALSTACK_AUTH_TOKEN.
        version = tuple(int(part) for part in tag.split("."))
        assert version <= (4, 14, 0), f"LocalStack {tag} needs LOCALSTACK_AUTH_TOKEN"
    assert service_env(localstack)["SERVICES"] == "s3"


def test_minio_serves_the_api_on_9000_and_the_console_on_9001(services):
    minio = services["minio"]
    ports = {(host, container) for _, host, container in published_ports(minio)}
    assert {(9000, 9000), (9001, 9001)} <= ports
    command = container_argv(minio)
    assert command[:2] == ["server", "/data"]
    assert command[command.index("--console-address") + 1] in (":9001", "0.0.0.0:9001")


def test_localstack_serves_s3_on_4566(services):
    assert (4566, 4566) in {(host, container) for _, host, container in published_ports(services["localstack"])}


def test_minio_keeps_its_data_in_a_named_volume(compose, services):
    named = set(compose.get("volumes") or {})
    assert named, "no named volume declared"
    mounts = [str(v) for v in services["minio"].get("volumes") or []]
    data = [m for m in mounts if m.split(":")[1:2] == ["/data"]]
    assert len(data) == 1, mounts
    assert data[0].split(":")[0] in named, f"{data[0]} does not use a declared named volume"


def test_every_host_variable_has_a_development_default(raw_compose):
    used = host_variables(raw_compose)
    assert used
    for match in used:
        assert match["braced"] and match["op"] == ":-" and match["arg"], f"{match[0]} has no default"
    names = {match["braced"] for match in used}
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MODELSTORAGE_BUCKET"} <= names


# -- health checks --------------------------------------------------------------------------------


def healthcheck(service: dict[str, Any]) -> list[str]:
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), "health check disabled"
    test = check.get("test")
    assert test, "no health check"
    return ["CMD-SHELL", test] if isinstance(test, str) else list(test)


def test_minio_health_check_uses_a_tool_the_image_ships(services):
    test = healthcheck(services["minio"])
    # The MinIO image has had no curl since late 2023; it ships `mc`.
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "curl" not in " ".join(test)
    assert test[1:] == ["mc", "ready", "local"] or "/minio/health/" in " ".join(test)


READY = {"completed": True, "scripts": [{"stage": "READY", "name": "create-bucket.sh", "state": "SUCCESSFUL"}]}


@pytest.mark.parametrize(
    ("body", "healthy"),
    [
        (json.dumps(READY), True),
        (json.dumps(READY, separators=(",", ":")), True),
        (json.dumps({"completed": True, "scripts": []}), True),
        (json.dumps({"completed": False, "scripts": [{**READY["scripts"][0], "state": "RUNNING"}]}), False),
        (json.dumps({"completed": True, "scripts": [{**READY["scripts"][0], "state": "ERROR"}]}), False),
        (None, False),  # LocalStack not answering yet
    ],
    ids=["ready", "ready-compact", "no-scripts", "running", "script-failed", "unreachable"],
)
def test_localstack_is_healthy_once_its_init_scripts_succeeded(services, tmp_path, body, healthy):
    test = healthcheck(services["localstack"])
    assert test[0] == "CMD-SHELL", "the check is a shell pipeline"
    shims = Shims(tmp_path / "bin")
    shims.add("curl", CURL)
    env = shims.env() if body is None else shims.env(SHIM_CURL_BODY=body)
    result = run(["/bin/sh", "-c", test[1]], env)
    assert (result.returncode == 0) is healthy, result
    urls = [arg for call in shims.calls("curl") for arg in call["argv"] if "://" in arg]
    assert urls and all(urlsplit(u).port == 4566 and u.endswith("/_localstack/init/ready") for u in urls)


# -- one bucket, one set of credentials --------------------------------------------------------------


def run_minio_init(services: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    shims = Shims(tmp_path / "bin")
    shims.add("mc")
    result = run(container_argv(services["minio-init"]), shims.env(**service_env(services["minio-init"])))
    assert result.returncode == 0, result
    return [call["argv"] for call in shims.calls("mc")]


def minio_init_bucket(calls: list[list[str]], services: dict[str, Any]) -> str:
    """The bucket the init's ``mc mb`` creates, checking the alias it uses points at the minio service."""
    aliases = {argv[2]: argv[3:] for argv in calls if argv[:2] == ["alias", "set"]}
    created = [argv for argv in calls if argv[:1] == ["mb"]]
    assert len(created) == 1, calls
    flags = [a for a in created[0][1:] if a.startswith("-")]
    assert {"--ignore-existing", "-p"} & set(flags), "a second `up` must not fail on the existing bucket"
    alias, _, bucket = [a for a in created[0][1:] if not a.startswith("-")][0].partition("/")
    assert alias in aliases, f"mc mb uses alias {alias!r}, set up: {sorted(aliases)}"
    url, access, secret = aliases[alias][:3]
    minio = service_env(services["minio"])
    assert urlsplit(url)._replace(path="").geturl() == "http://minio:9000"
    assert (access, secret) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    return bucket


def combiner_run(services: dict[str, Any], tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Run the combiner's script with every tool it calls recorded instead of run."""
    shims = Shims(tmp_path / "bin")
    for tool in ("mkdir", "tar", "pip", "modelstorage"):
        shims.add(tool)
    result = run(container_argv(services["combiner"]), shims.env(**service_env(services["combiner"])))
    assert result.returncode == 0, result
    calls: dict[str, list[dict[str, Any]]] = {}
    for call in shims.calls():
        calls.setdefault(call["cmd"], []).append(call)
    return calls


def combiner_url(services: dict[str, Any], tmp_path: Path) -> str:
    calls = combiner_run(services, tmp_path)["modelstorage"]
    urls = {call["env"].get(storage_config.URL_ENV) for call in calls}
    assert len(urls) == 1 and None not in urls, f"the combiner's commands do not all get ${storage_config.URL_ENV}"
    return urls.pop()


def test_minio_init_creates_the_bucket_with_the_minio_client(services, tmp_path):
    assert split_image(services["minio-init"]["image"])[0].endswith("/mc")
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    bucket = minio_init_bucket(run_minio_init(services, tmp_path), services)
    assert bucket == service_env(services["localstack"])["MODELSTORAGE_BUCKET"]


def test_localstack_mounts_the_init_folder(services):
    mounts = [str(v).split(":") for v in services["localstack"].get("volumes") or []]
    sources = {Path(m[0]) for m in mounts if len(m) > 1 and m[1] == LOCALSTACK_READY_MOUNT}
    assert sources == {Path("./localstack/init/ready.d")}
    assert READY_DIR.is_dir()


@pytest.mark.parametrize("host_env", [{}, {"MODELSTORAGE_BUCKET": "other-models"}], ids=["defaults", "overridden"])
def test_one_bucket_everywhere(raw_compose, tmp_path, host_env):
    services = resolve(raw_compose, host_env)["services"]
    localstack_env = service_env(services["localstack"])
    buckets = {
        "minio-init's mc mb": minio_init_bucket(run_minio_init(services, tmp_path), services),
        "localstack's environment": localstack_env["MODELSTORAGE_BUCKET"],
        "the LocalStack script": localstack_script_bucket(tmp_path, **localstack_env),
        "the combiner's URL": urlsplit(combiner_url(services, tmp_path)).path.lstrip("/").partition("/")[0],
    }
    assert len(set(buckets.values())) == 1, buckets
    if host_env:
        assert set(buckets.values()) == {host_env["MODELSTORAGE_BUCKET"]}


def localstack_script_bucket(tmp_path: Path, **env: str) -> str:
    """The bucket the LocalStack script asks for; its calls are recorded here, not sent."""
    shims = Shims(tmp_path / "awslocal-recorded")
    shims.add("awslocal")
    result = run([str(LOCALSTACK_SCRIPT)], shims.env(**env))
    assert result.returncode == 0, result
    argvs = [call["argv"] for call in shims.calls("awslocal")]
    buckets = {argv[argv.index("--bucket") + 1] for argv in argvs if "--bucket" in argv}
    assert len(buckets) == 1, argvs
    return buckets.pop()


def test_the_localstack_script_defaults_to_the_compose_files_bucket(services, tmp_path):
    # Run by hand (or by a LocalStack started without this compose file) it makes the same bucket.
    assert localstack_script_bucket(tmp_path) == service_env(services["localstack"])["MODELSTORAGE_BUCKET"]


def test_the_combiner_uses_the_minio_root_credentials(raw_compose):
    for host_env in ({}, {"MINIO_ROOT_USER": "dev-user", "MINIO_ROOT_PASSWORD": "dev-password-123"}):
        services = resolve(raw_compose, host_env)["services"]
        minio, combiner = service_env(services["minio"]), service_env(services["combiner"])
        assert combiner["MINIO_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
        assert combiner["MINIO_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        if host_env:
            assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
                host_env["MINIO_ROOT_USER"],
                host_env["MINIO_ROOT_PASSWORD"],
            )
        # MinIO refuses to start with a root password shorter than 8 characters.
        assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8


# -- the combiner ----------------------------------------------------------------------------------


_ENV_READ = re.compile(r"""(?:environ(?:\.get)?|getenv)\s*[(\[]\s*["']([A-Z][A-Z0-9_]*)["']""")


def env_names_the_library_reads() -> set[str]:
    """Variables read by storage/ and adapters/, and by the MinIO SDK credential providers the adapter chains."""
    from minio.credentials.providers import Provider  # where every minio 7.2 has it

    from adapters import miniomodelstorage

    names: set[str] = set()
    for path in [*sorted((REPO / "storage").rglob("*.py")), *sorted((REPO / "adapters").rglob("*.py"))]:
        names |= set(_ENV_READ.findall(path.read_text(encoding="utf-8")))
    names |= {storage_config.URL_ENV, *storage_config.FEDN_ENV.values()}
    providers = [
        obj
        for name, obj in vars(miniomodelstorage).items()
        if inspect.isclass(obj) and issubclass(obj, Provider) and name.startswith("Env")
    ]
    assert providers, "the MinIO adapter chains no environment credential provider"
    for provider in providers:
        names |= set(_ENV_READ.findall(inspect.getsource(provider)))
    return names


def test_the_combiner_sets_only_variables_something_reads(services):
    combiner = services["combiner"]
    env = service_env(combiner)
    read = env_names_the_library_reads()
    minio_names = {n for n in read if n.startswith("MINIO_")}
    assert minio_names == {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}, minio_names
    assert minio_names <= set(env), "the combiner does not set the MinIO adapter's credentials"
    script = " ".join(container_argv(combiner))
    for name in env:
        if name.startswith(STORE_ENV_PREFIXES):
            used_by_script = re.search(rf"\$\{{?{name}\b", script) is not None
            assert name in read or used_by_script, f"{name} is read neither by the adapters nor by the combiner"


def test_the_combiner_opens_minio_with_its_own_environment(services, tmp_path, monkeypatch):
    url = combiner_url(services, tmp_path)
    for name in list(os.environ):
        if name.startswith(STORE_ENV_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in service_env(services["combiner"]).items():
        monkeypatch.setenv(name, value)
    parts = urlsplit(url)
    assert parts.scheme == "minio" and parts.netloc == "minio:9000", url
    assert dict(parse_qsl(parts.query)) == {"secure": "false"}, "the compose network speaks plain HTTP"
    store = open_storage(url)  # builds the client; no request is sent
    with contextlib.closing(store):
        assert type(store).__name__ == "MinioModelStorage"
        assert store.endpoint == "minio:9000"
        assert store.bucket == service_env(services["localstack"])["MODELSTORAGE_BUCKET"]
        credentials = store.client._minio._provider.retrieve()
        minio = service_env(services["minio"])
        assert (credentials.access_key, credentials.secret_key) == (
            minio["MINIO_ROOT_USER"],
            minio["MINIO_ROOT_PASSWORD"],
        )


def test_the_combiner_installs_this_project_and_runs_simulate_once_minio_is_ready(services, tmp_path):
    combiner = services["combiner"]
    assert combiner["depends_on"]["minio"]["condition"] == "service_healthy"
    assert combiner["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    mounts = [str(v).split(":") for v in combiner.get("volumes") or []]
    assert [m for m in mounts if m[0] in (".", "./") and m[1:] == ["/src", "ro"]], f"no read-only checkout: {mounts}"

    calls = combiner_run(services, tmp_path)
    installs = [c["argv"] for c in calls["pip"] if c["argv"][:1] == ["install"]]
    assert len(installs) == 1, calls.get("pip")
    target = [a for a in installs[0][1:] if not a.startswith("-")]
    assert len(target) == 1 and target[0].endswith("[simulate]"), installs
    assert "simulate" in (importlib.metadata.metadata("modelstorage").get_all("Provides-Extra") or [])
    commands = [c["argv"] for c in calls["modelstorage"]]
    assert commands[-1][:1] == ["simulate"], commands
    assert commands[-1][1:] == [str(a) for a in combiner.get("command") or []], "arguments reach simulate"
    assert ["check"] in commands[:-1], "check the store before simulating"


# -- the LocalStack init script ---------------------------------------------------------------------


def test_the_localstack_script_is_executable_with_a_shebang():
    assert LOCALSTACK_SCRIPT.is_file()
    mode = LOCALSTACK_SCRIPT.stat().st_mode
    assert os.access(LOCALSTACK_SCRIPT, os.X_OK) and mode & stat.S_IXOTH, f"mode {stat.filemode(mode)}"
    assert LOCALSTACK_SCRIPT.read_text(encoding="utf-8").startswith("#!/bin/bash\n")
    # Once committed, git must have recorded the mode too (core.fileMode=false would drop it).
    git = shutil.which("git")
    if git:
        listed = subprocess.run(
            [git, "-C", str(REPO), "ls-files", "-s", "--", str(LOCALSTACK_SCRIPT.relative_to(REPO))],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if listed:  # tracked
            assert listed[0] == "100755", f"git records mode {listed[0]}: git update-index --chmod=+x"


def test_every_ready_hook_is_an_executable_shell_or_python_script():
    hooks = [p for p in READY_DIR.rglob("*") if p.is_file()]
    assert LOCALSTACK_SCRIPT in hooks
    for hook in hooks:
        assert hook.suffix in (".sh", ".py"), f"LocalStack ignores {hook.name}"
        if hook.suffix == ".sh":
            assert os.access(hook, os.X_OK), f"LocalStack skips {hook.name}: not executable"


def test_the_localstack_script_parses():
    result = subprocess.run(["bash", "-n", str(LOCALSTACK_SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_localstack_script_creates_the_bucket_and_a_second_run_changes_nothing(moto_server_endpoint, tmp_path):
    bucket = f"compose-{uuid.uuid4().hex[:12]}"
    shims = Shims(tmp_path / "bin")
    s3 = moto_server_endpoint.boto3_client()

    try:
        first = run_localstack_script(shims, moto_server_endpoint.endpoint_url, MODELSTORAGE_BUCKET=bucket)
        assert first.returncode == 0, first
        calls = shims.calls("awslocal")
        assert [c["argv"][:2] for c in calls] == [["s3api", "head-bucket"], ["s3", "mb"]]
        assert calls[-1]["env"]["AWS_ACCESS_KEY_ID"], "LocalStack 4 wants credentials from init hooks too"
        s3.head_bucket(Bucket=bucket)

        second = run_localstack_script(shims, moto_server_endpoint.endpoint_url, MODELSTORAGE_BUCKET=bucket)
        assert second.returncode == 0, second
        assert [c["argv"][:2] for c in shims.calls("awslocal")] == [["s3api", "head-bucket"]]
        assert bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    finally:
        with contextlib.suppress(Exception):  # best-effort cleanup of the shared server
            s3.delete_bucket(Bucket=bucket)


def test_the_localstack_script_fails_when_it_cannot_create_the_bucket(tmp_path):
    # An exit code other than 0 makes LocalStack mark the hook ERROR, which keeps the service unhealthy.
    shims = Shims(tmp_path / "bin")
    shims.add("awslocal", "sys.exit(255)  # as the AWS CLI does when it cannot connect\n")
    result = run([str(LOCALSTACK_SCRIPT)], shims.env(MODELSTORAGE_BUCKET="unreachable-models"))
    assert result.returncode != 0
    assert [c["argv"][:2] for c in shims.calls("awslocal")] == [["s3api", "head-bucket"], ["s3", "mb"]]


# -- the docs ----------------------------------------------------------------------------------------


def test_the_readme_says_where_the_minio_images_come_from(services):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Local development\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no 'Local development' section"
    section = match[1]
    registry = split_image(services["minio"]["image"])[0].split("/", 1)[0]
    assert registry in section
    assert "docker compose up" in section
    assert "endpoint_url=http://localhost:4566" in section
    # The host commands name the bucket compose makes.
    bucket = service_env(services["localstack"])["MODELSTORAGE_BUCKET"]
    assert f"minio://localhost:9000/{bucket}/" in section and f"s3://{bucket}/" in section
