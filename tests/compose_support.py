"""What the tests of docker-compose.yml share: compose's interpolation, reading services, and shims for container tools.

No Docker engine is needed: the compose file is parsed with PyYAML and its
``${VAR:-default}`` interpolation resolved here; the shell snippets it holds
are run for real with the container tools replaced by small shims on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
READY_DIR = REPO / "localstack" / "init" / "ready.d"
LOCALSTACK_SCRIPT = READY_DIR / "create-bucket.sh"
README = REPO / "README.md"


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
