#!/bin/bash
# LocalStack runs this once S3 is ready (docker-compose.yml mounts this folder at
# /etc/localstack/init/ready.d). It creates the models bucket the demo uses; when
# the bucket is already there (LocalStack with persistence, a second run) it does
# nothing. LocalStack only runs executable scripts with a shebang: keep the mode
# 755 (git records it as 100755).
set -euo pipefail

bucket="${MODELSTORAGE_BUCKET:-fedn-models}"

# LocalStack 4 wants credentials on every call, init hooks included; it accepts any.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

if awslocal s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
    echo "create-bucket: s3://$bucket already exists"
else
    awslocal s3 mb "s3://$bucket"
fi
