#!/usr/bin/env python3
"""A VPS-service instance written with PyPI `grpcio` and stubs generated from the original
.proto: registers over gRPC, answers FindVPSByLease for the leases on the command line, and
prints every event as one JSON line on stdout. Ends when the gateway ends the stream.
"""
import argparse
import json
import os
import queue
import sys

import grpc

from obiente.cloud.vps.v1 import find_vps_by_lease_pb2 as lookup_pb2
from obiente.cloud.vpsgateway.v1 import gateway_pb2, gateway_pb2_grpc


def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--lease", action="append", default=[], help="MAC=VPS_ID")
    args = parser.parse_args()
    owners = dict(lease.lower().split("=", 1) for lease in args.lease)

    outbound: queue.Queue = queue.Queue()

    def requests():
        # Only the original fields: an old client sends no environment and no methods.
        yield gateway_pb2.GatewayMessage(
            type="register",
            registration=gateway_pb2.GatewayRegistration(gateway_id="grpcio-node", version="grpcio", gateway_ip_dhcp=args.instance),
        )
        while True:
            message = outbound.get()
            if message is None:
                return
            yield message

    with grpc.insecure_channel(args.target) as channel:
        stub = gateway_pb2_grpc.VPSGatewayServiceStub(channel)
        try:
            for message in stub.RegisterGateway(requests(), metadata=[("x-api-secret", args.secret)]):
                if message.type == "registered":
                    log("registered")
                elif message.type == "request":
                    query = lookup_pb2.FindVPSByLeaseRequest.FromString(message.request.payload)
                    vps = owners.get(query.mac.lower())
                    payload = lookup_pb2.FindVPSByLeaseResponse(vps_id=vps or "").SerializeToString()
                    outbound.put(gateway_pb2.GatewayMessage(
                        type="response",
                        response=gateway_pb2.GatewayResponse(request_id=message.request.request_id, success=vps is not None, payload=payload),
                    ))
                    log("answered", request_id=message.request.request_id, found=vps is not None)
                else:
                    log("message", type=message.type)
            log("end", code="ok")
        except grpc.RpcError as error:
            log("end", code=error.code().name.lower(), message=error.details())
        outbound.put(None)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
