#!/usr/bin/env python3
"""A VPS-service instance written with PyPI `connectrpc` (pyqwest, HTTP/2 with prior
knowledge), as the platform's own client would be: it opens RegisterGateway over the Connect
protocol (or gRPC with --protocol grpc), registers, answers FindVPSByLease from the leases
given on the command line, and prints every event as one JSON line on stdout for the test to
read. It ends when the gateway ends the stream, or after --stop-after seconds (then it
finishes its requests and reads to the end of the stream: a clean close).
"""
import argparse
import asyncio
import json
import os
import sys

import pyqwest
from connectrpc.protocol import ProtocolType
from connectrpc.compression.gzip import GzipCompression
from connectrpc.errors import ConnectError

from obiente.cloud.vps.v1 import find_vps_by_lease_pb as lookup_pb
from obiente.cloud.vpsgateway.v1 import gateway_pb
from obiente.cloud.vpsgateway.v1.gateway_connect import VPSGatewayServiceClient


def log(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--environment", required=True)
    parser.add_argument("--lease", action="append", default=[], help="MAC=IP=VPS_ID=ORG_ID")
    parser.add_argument("--protocol", choices=["connect", "grpc"], default="connect")
    parser.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--delay-ms", type=int, default=0, help="answer every request this late")
    parser.add_argument("--stop-after", type=float, default=0, help="half-close after this many seconds")
    args = parser.parse_args()

    by_mac, by_ip = {}, {}
    for lease in args.lease:
        mac, ip, vps, org = lease.split("=")
        by_mac[mac.lower()] = (vps, org)
        by_ip[ip] = (vps, org)

    client = VPSGatewayServiceClient(
        args.url,
        protocol=ProtocolType.CONNECT if args.protocol == "connect" else ProtocolType.GRPC,
        send_compression=GzipCompression() if args.gzip else None,
        http_client=pyqwest.Client(pyqwest.HTTPTransport(http_version=pyqwest.HTTPVersion.HTTP2)),
    )
    outbound: asyncio.Queue = asyncio.Queue()
    running = {}

    async def requests():
        yield gateway_pb.GatewayMessage(
            type="register",
            registration=gateway_pb.GatewayRegistration(
                gateway_id="python-node", version="connectrpc-0.13.0",
                gateway_ip_dhcp=args.instance, environment=args.environment,
                methods=["FindVPSByLease"],
            ),
        )
        while True:
            message = await outbound.get()
            if message is None:
                return
            yield message

    async def answer(request):
        try:
            if args.delay_ms:
                await asyncio.sleep(args.delay_ms / 1000)
            query = lookup_pb.FindVPSByLeaseRequest.from_binary(request.payload)
            owner = by_mac.get(query.mac.lower()) or by_ip.get(query.ip)
            if owner:
                payload = lookup_pb.FindVPSByLeaseResponse(vps_id=owner[0], organization_id=owner[1]).to_binary()
                response = gateway_pb.GatewayResponse(request_id=request.request_id, success=True, payload=payload, code="ok")
            else:
                response = gateway_pb.GatewayResponse(request_id=request.request_id, success=False, code="not_found", error="no such lease")
            await outbound.put(gateway_pb.GatewayMessage(type="response", response=response))
            log("answered", request_id=request.request_id, found=bool(owner))
        except asyncio.CancelledError:
            log("cancelled", request_id=request.request_id)
        finally:
            running.pop(request.request_id, None)

    async def stop_later():
        await asyncio.sleep(args.stop_after)
        log("stopping")
        await outbound.put(None)

    stopper = asyncio.create_task(stop_later()) if args.stop_after else None
    try:
        async for message in client.register_gateway(requests(), headers={"x-api-secret": args.secret}):
            if message.type == "registered":
                log("registered")
            elif message.type == "request":
                log("request", request_id=message.request.request_id, method=message.request.method, attempt=message.request.attempt)
                running[message.request.request_id] = asyncio.create_task(answer(message.request))
            elif message.type == "cancel":
                task = running.get(message.request.request_id)
                log("cancel", request_id=message.request.request_id, was_running=task is not None)
                if task:
                    task.cancel()
            elif message.type == "heartbeat":
                await outbound.put(gateway_pb.GatewayMessage(type="heartbeat"))
            else:
                log("message", type=message.type)
        log("end", code="ok")
    except ConnectError as error:
        log("end", code=error.code.name.lower(), message=error.message)
    finally:
        if stopper:
            stopper.cancel()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    # pyqwest's runtime can abort while the interpreter tears down; the work is done here.
    os._exit(0)
