#!/usr/bin/env bash
# Compiles the vendored Open Inference Protocol .proto into the descriptor the gRPC server loads
# (adapters/serving/proto/open_inference_grpc.desc). Needs grpcio-tools (the test extra).
set -euo pipefail
cd "$(dirname "$0")/../adapters/serving/proto"
../../../.venv/bin/python -m grpc_tools.protoc -I. --descriptor_set_out=open_inference_grpc.desc \
  open_inference_grpc.proto
