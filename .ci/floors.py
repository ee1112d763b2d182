"""Print pip requirements that pin the SDKs and tenacity to the lowest versions pyproject.toml allows.

``boto3>=1.36`` becomes ``boto3==1.36.0`` (and botocore, which boto3 brings, the same); CI installs
these over the project's own requirements and runs the object-store tests again, so the floors hold.
"""

import re
from pathlib import Path

import tomllib

PINNED = ("boto3", "minio", "tenacity")

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
pins = []
for requirement in project["dependencies"]:
    found = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
    if found and found[1] in PINNED:
        version = ".".join((found[2].split(".") + ["0", "0"])[:3])
        pins.append(f"{found[1]}=={version}")
        if found[1] == "boto3":
            pins.append(f"botocore=={version}")
missing = set(PINNED) - {pin.split("==")[0] for pin in pins}
if missing:
    raise SystemExit(f"pyproject.toml gives no >= floor for {', '.join(sorted(missing))}")
print(" ".join(pins))
