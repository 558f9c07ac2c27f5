"""``icrt serve``: a bundle served over HTTP and gRPC by NVIDIA Triton through PyTriton (``runtime.serving.server``;
the ``[serve]`` extra, docs/serving.md)."""
from __future__ import annotations

import icrt.runtime.cli.options as options
import icrt.runtime.serving.limits as limits
from icrt.runtime.cli.command import Command


def arguments(p) -> None:
    options.add_scorer_options(p, help={
        "threads": "CPU threads of the inference engine per instance (default: the physical cores / --instances)",
        "batch_size": "model inputs per inference call of an instance (default: as icrt score)"})
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--http-port", type=int, default=8000, metavar="PORT", help="HTTP (KServe v2) port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="PORT", help="gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="PORT",
                   help="Prometheus metrics port (default 8002)")
    options.add_serving(p)
    p.add_argument("--log-file", default=None, metavar="FILE", help="write Triton's log here instead of stdout")
    p.add_argument("--max-pixels", type=int, default=limits.MAX_IMAGE_PIXELS, metavar="N",
                   help=f"decoded pixels an image may have (read from its header before decoding; default "
                        f"{limits.MAX_IMAGE_PIXELS:_}); a larger one gets an error row")
    p.add_argument("--max-request-pixels", type=int, default=limits.MAX_REQUEST_PIXELS, metavar="N",
                   help=f"decoded pixels of a request's images together (default {limits.MAX_REQUEST_PIXELS:_}); "
                        "images beyond them get an error row, the others are scored")
    p.add_argument("--max-request-seconds", type=float, default=limits.MAX_REQUEST_SECONDS, metavar="S",
                   help=f"seconds of work on one request (default {limits.MAX_REQUEST_SECONDS:g}); its images not "
                        "started by then get an error row, so that one request cannot hold everyone else")


def run(args) -> int:
    from icrt.runtime.serving.server import serve

    request_limits = limits.RequestLimits(image_pixels=args.max_pixels, request_pixels=args.max_request_pixels,
                                          request_seconds=args.max_request_seconds)
    return serve(options.scorer_options(args, model=options.bundle(args)), host=args.host, http_port=args.http_port,
                 grpc_port=args.grpc_port, metrics_port=args.metrics_port, name=args.name, max_batch=args.max_batch,
                 max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, log_file=args.log_file,
                 limits=request_limits)


COMMAND = Command(
    "serve", help="serve a bundle over HTTP/gRPC with NVIDIA Triton (PyTriton; the [serve] extra)",
    description=("Serve a bundle as the Triton model 'icrt' (input image: encoded image files, BYTES; outputs "
                 "score, error, patches, width, height), with Triton's dynamic batching, health endpoints and "
                 "Prometheus metrics. Stops on Ctrl+C or SIGTERM."),
    examples=(("icrt serve", "the default model on 127.0.0.1:8000 (HTTP), 8001 (gRPC)"),
              ("icrt serve -m bundles/d2s --host 0.0.0.0 --instances 2", ""),
              ("icrt score photos/ --url http://localhost:8000", "score through it")),
    arguments=arguments, run=run)
