#!/usr/bin/env bash
# Installs LocalStack (S3 only, run in-process by adapters/testing/localstack.py, no Docker)
# into a virtual environment of its own:
#
#   bash .ci/install-localstack.sh
#
# Its own venv because localstack-core does not import on the project's Python (3.11) and
# pins dependencies the project does not want. Idempotent: a venv whose stamp matches the
# pins below is left alone, so CI can run this on every build.
#
#   MODELSTORAGE_LOCALSTACK_VENV   where the venv goes (default ~/.cache/modelstorage/localstack-venv;
#                                  elsewhere, point MODELSTORAGE_LOCALSTACK_PYTHON at its bin/python)
#   MODELSTORAGE_PYTHON313         the Python 3.13 to build it with (default: pyenv's, else python3.13)
set -euo pipefail

venv="${MODELSTORAGE_LOCALSTACK_VENV:-$HOME/.cache/modelstorage/localstack-venv}"

# 2026.3.0 is the last localstack-core that runs S3 without an auth token; its [runtime]
# extra pins boto3, botocore and awscli. The caps keep versions it was built against: newer
# cbor2, pyOpenSSL and cryptography break its import. service_identity: without it, its TLS
# stack warns on every start. awscli-local gives the init hooks (localstack/init/ready.d) the
# `awslocal` command they call, as the Docker image has.
requirements=(
    "localstack-core[runtime]==2026.3.0"
    "service_identity"
    "cbor2<6"
    "pyopenssl<25"
    "cryptography<45"
    "awscli-local==0.23.0"
)
stamp="$venv/.modelstorage-installed"
want="${requirements[*]}"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'import localstack.runtime.main' 2>/dev/null \
    && [[ -x "$venv/bin/awslocal" ]]; then
    echo "LocalStack already installed in $venv"
    exit 0
fi

find_python313() {
    if [[ -n "${MODELSTORAGE_PYTHON313:-}" ]]; then
        echo "$MODELSTORAGE_PYTHON313"
        return
    fi
    # pyenv's interpreter directly, not its shim: the shim answers only if 3.13 is selected.
    local root
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    local candidate
    while IFS= read -r candidate; do
        if [[ -x "$candidate/bin/python3.13" ]]; then
            echo "$candidate/bin/python3.13"
            return
        fi
    done < <(ls -d "$root"/versions/3.13* 2>/dev/null | sort -V -r)
    command -v python3.13 || true
}

python313="$(find_python313)"
if [[ -z "$python313" ]] || ! "$python313" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    echo "install-localstack: no Python 3.13 found (looked at \$MODELSTORAGE_PYTHON313, pyenv's versions/3.13*," \
        "python3.13 on PATH). Install one, e.g. 'pyenv install 3.13', and run this again." >&2
    exit 1
fi

if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" ]]; then
    echo "install-localstack: $venv exists and is not a virtual environment; not touching it." >&2
    exit 1
fi
echo "Installing LocalStack into $venv with $python313"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python313" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import localstack.runtime.main'
echo "$want" >"$stamp"
echo "LocalStack installed: $venv/bin/python"
