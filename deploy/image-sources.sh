#!/usr/bin/env bash
# Prints one hash of everything the Dockerfile copies into the image (the same list as its COPY lines).
# `make image` labels the image with it (io.acr-transfer.sources), and tests/stack/test_container_image.py runs
# only against an image whose label matches this tree: a test of an image built from other sources proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  printf '%s\n' Dockerfile pyproject.toml uv.lock README.md prefect.yaml routes.example.yaml deploy/prefect.kubernetes.yaml
  find acr_transfer tasks flows deployments emulator -type f ! -path '*/__pycache__/*' ! -name '*.pyc'
} | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64
