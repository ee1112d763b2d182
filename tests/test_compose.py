"""docker-compose.yml, the combiner's image and the LocalStack init hook, checked without Docker.

No Docker engine is needed: the compose file is parsed with PyYAML and its
``${VAR:-default}`` interpolation resolved (``compose_support``), and the
shell snippets it and ``localstack/init/ready.d`` hold are run for real with
the container tools (``mc``, ``awslocal``, ``curl``, ``modelstorage``)
replaced by small shims on PATH. The ``awslocal`` shim talks to moto's S3
server, so the LocalStack script really creates (and then leaves alone) a
bucket. What ``docker compose up`` does with the file (profiles, ``attach``,
``--exit-code-from``) is modelled here after compose's own rules.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from compose_support import (
    COMPOSE_FILE,
    CURL,
    LOCALSTACK_SCRIPT,
    README,
    READY_DIR,
    REPO,
    Shims,
    container_argv,
    host_variables,
    published_ports,
    resolve,
    run,
    run_localstack_script,
    service_env,
    split_image,
)

from storage import open_storage
from storage import registry as storage_config

# Where the compose file mounts the hook folder, and what LocalStack runs from there.
LOCALSTACK_READY_MOUNT = "/etc/localstack/init/ready.d"
STORE_ENV_PREFIXES = ("MINIO_", "AWS_", "FEDN_", "MODELSTORAGE_")
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly"}


# -- the compose file, as compose sees it ----------------------------------------------------------


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


# -- the services ---------------------------------------------------------------------------------


def test_the_stack_has_minio_its_bucket_init_localstack_and_a_combiner(services):
    assert {"minio", "minio-init", "localstack", "combiner"} <= set(services)


def image_of(service: dict[str, Any]) -> str:
    """The image a service runs: its ``image``, or the base (FROM) of the Dockerfile it is built from."""
    if "build" not in service:
        return service["image"]
    dockerfile = dockerfile_of(service).read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    return base


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    return context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")


@pytest.mark.parametrize("name", ["minio", "minio-init", "localstack", "combiner"])
def test_every_image_is_pinned(services, name):
    reference = image_of(services[name])
    image, tag, digest = split_image(reference)
    assert tag, f"{name}: {reference} has no tag"
    assert tag.lower() not in FLOATING_TAGS, f"{name}: {reference} floats"
    if digest is not None:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: malformed digest in {reference}"
    if image.rsplit("/", 1)[-1] in ("minio", "mc"):
        # Docker Hub's minio/minio and minio/mc are gone (September 2026); quay.io still serves them.
        assert image.startswith("quay.io/minio/"), f"{name}: {reference} is not from a registry that serves MinIO"
        assert tag.startswith("RELEASE."), f"{name}: MinIO images are pinned to a RELEASE tag"


# -- what `docker compose up` starts, and what it waits for -------------------------------------------


def started_by_default(services: dict[str, dict[str, Any]]) -> set[str]:
    """What a plain ``docker compose up`` starts: the services in no profile."""
    return {name for name, service in services.items() if not service.get("profiles")}


def watched_by_exit_code_from(services: dict[str, dict[str, Any]]) -> set[str]:
    """The services ``docker compose up --exit-code-from X`` watches for an exit.

    As compose (2.20 and later) decides: with no service named on the command
    line, those it attaches to, i.e. the started ones whose ``attach`` is not
    false. It stops everything at the first exit among them (implied
    --abort-on-container-exit) and returns X's exit code.
    """
    return {name for name in started_by_default(services) if services[name].get("attach", True) is not False}


def test_up_with_exit_code_from_the_combiner_returns_when_the_combiner_does(services):
    # minio-init exits 0 before the combiner starts: watched, it would stop the stack at once.
    assert watched_by_exit_code_from(services) == {"combiner"}
    needed = set(services["combiner"]["depends_on"])
    assert needed <= started_by_default(services) - {"combiner"}


def test_localstack_waits_for_its_profile(services):
    # Nothing in the demo uses it: `docker compose up` leaves it out.
    assert services["localstack"]["profiles"] == ["localstack"]
    assert "localstack" not in started_by_default(services)
    for name in started_by_default(services):
        assert "localstack" not in (services[name].get("depends_on") or {}), f"{name} would start it anyway"


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


def test_the_combiner_is_an_image_built_once_from_this_checkout(services):
    combiner = services["combiner"]
    dockerfile = dockerfile_of(combiner)
    assert dockerfile.is_file() and (REPO / combiner["build"]["context"]).resolve() == REPO
    text = dockerfile.read_text(encoding="utf-8")
    copied = re.findall(r"^COPY\s+\.\s+(\S+)$", text, re.M)
    assert len(copied) == 1, "the checkout is copied into the image once"
    installs = re.findall(r"pip install\s+\"?(\S+?)\"?(?:\s|$)", text)
    assert installs == [f"{copied[0]}[simulate]"], installs
    assert "simulate" in (importlib.metadata.metadata("modelstorage").get_all("Provides-Extra") or [])
    assert not combiner.get("volumes"), "the image has the code: no checkout to mount"
    # Starting it installs nothing.
    assert not re.search(r"\bpip\b", " ".join(container_argv(combiner)))


def test_the_combiner_image_is_built_from_what_the_package_needs_only():
    ignored = [
        line.strip()
        for line in (REPO / "docker" / "combiner.Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def left_out(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern.removeprefix("**/")) for pattern in ignored)

    for needed in ("pyproject.toml", "README.md", "storage", "adapters"):
        assert not left_out(needed), needed
    for clutter in (".git", ".venv", ".hypothesis", "modelstorage.egg-info", "tests", "__pycache__"):
        assert left_out(clutter), clutter


def test_the_combiner_checks_the_store_then_runs_simulate_once_minio_is_ready(services, tmp_path):
    combiner = services["combiner"]
    assert combiner["depends_on"]["minio"]["condition"] == "service_healthy"
    assert combiner["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"

    calls = combiner_run(services, tmp_path)
    assert set(calls) == {"modelstorage"}, f"the combiner runs more than modelstorage at start: {sorted(calls)}"
    commands = [c["argv"] for c in calls["modelstorage"]]
    assert commands[-1][:1] == ["simulate"], commands
    assert commands[-1][1:] == [str(a) for a in combiner.get("command") or []], "arguments reach simulate"
    assert ["check"] in commands[:-1], "check the store before simulating"


def test_a_stop_during_the_check_ends_the_combiner_once_the_check_is_done(services, tmp_path):
    # Until it execs simulate, the entrypoint's shell is the container's PID 1, which gets no
    # SIGTERM it has no handler for: without its trap, `docker stop` would wait for SIGKILL.
    shims = Shims(tmp_path / "bin")
    shims.add("modelstorage", "import time\nif sys.argv[1:] == ['check']:\n    time.sleep(1)\n")
    proc = subprocess.Popen(
        container_argv(services["combiner"]),
        env=shims.env(**service_env(services["combiner"])),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not shims.log.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the check is under way
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert [c["argv"] for c in shims.calls("modelstorage")] == [["check"]], "simulate ran after the stop"


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
    assert "endpoint_url=http://localhost:4566" in section
    # The host commands name the bucket compose makes.
    bucket = service_env(services["localstack"])["MODELSTORAGE_BUCKET"]
    assert f"minio://localhost:9000/{bucket}/" in section and f"s3://{bucket}/" in section


def test_the_readme_runs_the_demo_so_that_it_returns_the_combiners_exit_code():
    section = re.search(r"^## Local development\n(.*?)(?=^## )", README.read_text(encoding="utf-8"), re.S | re.M)[1]
    commands = [line.split("#")[0].strip() for line in section.splitlines() if line.startswith("docker compose")]
    assert "docker compose up --exit-code-from combiner" in commands
    assert not [c for c in commands if c in ("docker compose up", "docker compose up -d")], "returns no verdict"
    assert "docker compose --profile localstack up -d --wait localstack" in section, "how LocalStack is started"
