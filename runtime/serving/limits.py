"""What icrt's servers take, for ``icrt serve`` and ``icrt triton`` alike: model names, batch sizes, instances,
request sizes; :func:`check` is the one check of a served model's settings (one ``UserInputError`` line each)."""
from __future__ import annotations

import re

from icrt.runtime.base.errors import UserInputError

DEFAULT_MODEL_NAME = "icrt"
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # a Triton model name (a folder of the repository)
MAX_MAX_BATCH = 1024  # images per batch Triton hands to a model
MAX_INSTANCES = 64  # instances of a model (each its own session and memory)
# Sizes icrt's servers take (``icrt serve``) and its client sends (``icrt score --url``). Triton's HTTP endpoint has
# its own 64 MB limit on a request, fixed in the tritonserver that PyTriton ships (no option lowers it); its gRPC
# endpoint takes up to 2 GB. ``icrt serve`` refuses, before any decoding, an image larger than MAX_IMAGE_BYTES and
# every image of a request larger than MAX_REQUEST_BYTES, with an error row each.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def check(name: str, max_batch: int, instances: int, max_queue_delay_us: int) -> None:
    """UserInputError naming the option for a model name, batch size, instance count or queue delay icrt's
    servers do not take."""
    if not isinstance(name, str) or not MODEL_NAME.match(name) or name in (".", ".."):
        from icrt.runtime.base.text import printable
        raise UserInputError(f"--name {printable(repr(name))}: a Triton model name is letters, digits, '_', '-' "
                             "and '.'")
    if not 1 <= int(max_batch) <= MAX_MAX_BATCH:
        raise UserInputError(f"--max-batch must be in [1, {MAX_MAX_BATCH}], got {max_batch}")
    if not 1 <= int(instances) <= MAX_INSTANCES:
        raise UserInputError(f"--instances must be in [1, {MAX_INSTANCES}], got {instances}")
    if int(max_queue_delay_us) < 0:
        raise UserInputError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
