#!/usr/bin/env bash
# The real clients the end-to-end tests talk to the gateway with, written by others: PyPI
# `connectrpc` (a Connect client over HTTP/2, on pyqwest) and `grpcio`. Makes a virtualenv
# under .build/python-clients (once; again when this file changes) and generates the stubs
# from proto/ with grpc_tools.protoc and protoc-gen-connectrpc, offline.
#   scripts/python-clients.sh          # prints the virtualenv's directory
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/python-clients
stamp="$venv/.stamp-$(sha256sum "$0" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check \
        connectrpc==0.13.0 pyqwest==0.12.0 protoc-gen-connectrpc==0.13.0 protoc-gen-py==0.7.0 \
        grpcio==1.85.3 grpcio-tools==1.85.1 >&2
    touch "$stamp"
fi
protos=(proto/obiente/cloud/vpsgateway/v1/gateway.proto proto/obiente/cloud/vps/v1/find_vps_by_lease.proto)
rm -rf "$venv/connect-stubs" "$venv/grpc-stubs"
mkdir -p "$venv/connect-stubs" "$venv/grpc-stubs"
"$venv/bin/python" -m grpc_tools.protoc -I proto \
    --plugin=protoc-gen-py="$venv/bin/protoc-gen-py" --py_out="$venv/connect-stubs" \
    --plugin=protoc-gen-connectrpc="$venv/bin/protoc-gen-connectrpc" --connectrpc_out="$venv/connect-stubs" \
    "${protos[@]}"
"$venv/bin/python" -m grpc_tools.protoc -I proto \
    --python_out="$venv/grpc-stubs" --grpc_python_out="$venv/grpc-stubs" "${protos[@]}"
echo "$PWD/$venv"
