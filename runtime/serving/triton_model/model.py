"""icrt's front model for NVIDIA Triton's Python backend, written into a model repository by ``icrt triton``.

Input ``image``: one encoded image file (JPEG, PNG, ...) per batch row (BYTES). It is decoded and preprocessed by
icrt's own runtime code (the copy of the ``runtime`` package in this folder), so that scores equal ``icrt score``;
every model input (one per image, or one per patch) goes through the ONNX or TensorRT model of this repository in
BLS requests of at most that model's max_batch_size, and the patch scores are pooled per image. Outputs: ``score``
(FP32, NaN for a file that could not be scored), ``error`` (BYTES: the problem, empty when scored), ``patches``,
``width``, ``height`` (INT32).

Settings come from this model's config.pbtxt ``parameters`` (written by ``icrt triton``): ``icrt_preprocessing``,
``icrt_score_range``, ``icrt_input``, ``icrt_score_output``, and ``icrt_targets`` (the models to call, in order:
when the first cannot be reached, e.g. a TensorRT plan model that did not load on this GPU, the next one is used).
Each request is held to the limits of ``icrt serve`` (runtime/serving/limits.py: bytes, decoded pixels read from the
headers, seconds), or to ``icrt_max_pixels``, ``icrt_max_request_pixels``, ``icrt_max_request_seconds`` where the
config gives them.

Needs numpy and Pillow in the Python that runs the backend stub (docs/serving.md: a derived container image, or
EXECUTION_ENV_PATH with a conda-pack archive).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path[:1] != [_HERE]:
    sys.path.insert(0, _HERE)  # this folder's copy of icrt's runtime comes before any installed one

from icrt.runtime.base.text import printable  # noqa: E402
from icrt.runtime.bundle.preprocessing import Preprocessing  # noqa: E402
from icrt.runtime.bundle.records import IMAGE_INPUT, outputs_for  # noqa: E402
from icrt.runtime.scoring.scorer import Scorer  # noqa: E402
from icrt.runtime.serving.limits import RequestLimits, score_requests  # noqa: E402

# words of Triton's error when a BLS target is not loaded: then the next target is tried
_UNREACHABLE = ("unavailable", "not found", "not ready", "unknown model", "no version is available")


def _log(text):
    text = printable(text)  # Triton's messages quote the repository's models; the log may be a terminal
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_warn(text)
    else:
        print(text, file=sys.stderr, flush=True)


class BlsBackend:
    """The runtime's backend interface (``run(batch) -> scores``) over BLS requests to another model of the
    repository."""

    name = "triton-bls"
    device = "triton"
    precision = ""

    def __init__(self, targets, input_name, score_output):
        self.targets, self.input_name, self.score_output = targets, input_name, score_output
        self.current = 0
        self.max_batch = min(int(t["max_batch"]) for t in targets)
        self.notes = []
        self.memory = {}
        if hasattr(pb_utils, "PreferredMemory"):  # outputs of a GPU model come back in CPU memory
            self.memory = {"preferred_memory": pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}

    @property
    def file(self):
        return self.targets[self.current]["model"]

    def run(self, batch):
        while True:
            target = self.targets[self.current]
            x = np.ascontiguousarray(batch, dtype=target.get("dtype", "float32"))
            request = pb_utils.InferenceRequest(model_name=target["model"], requested_output_names=[self.score_output],
                                                inputs=[pb_utils.Tensor(self.input_name, x)], **self.memory)
            response = request.exec()
            if response.has_error():
                message = response.error().message()
                if self.current + 1 < len(self.targets) and any(w in message.lower() for w in _UNREACHABLE):
                    _log(f"icrt: {target['model']} cannot be used ({message}); using "
                         f"{self.targets[self.current + 1]['model']} from now on")
                    self.current += 1
                    continue
                raise RuntimeError(f"{target['model']}: {message}")
            scores = pb_utils.get_output_tensor_by_name(response, self.score_output).as_numpy()
            n = len(batch)
            if scores.size != n:
                raise RuntimeError(f"{target['model']}: {scores.size} scores for a batch of {n}")
            return np.asarray(scores, np.float32).reshape(n)

    def describe(self):
        return {"backend": self.name, "precision": self.precision, "device": self.device, "file": self.file,
                "max_batch": self.max_batch, "notes": list(self.notes)}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        prep = Preprocessing.from_dict(json.loads(params["icrt_preprocessing"]))
        score_range = tuple(json.loads(params.get("icrt_score_range") or "[0.0, 1.0]"))
        targets = json.loads(params["icrt_targets"])
        backend = BlsBackend(targets, params.get("icrt_input") or "image", params.get("icrt_score_output") or "score")
        self.scorer = Scorer.for_preprocessing(backend, prep, score_range=score_range, batch_size=backend.max_batch)
        self.limits = RequestLimits.from_parameters(params)

    def execute(self, requests):
        rows = [[r if isinstance(r, bytes) else bytes(r)
                 for r in pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy().reshape(-1)]
                for request in requests]
        try:
            records = score_requests(self.scorer, rows, self.limits)
        except Exception as e:  # the model itself failed: every request of this batch gets the error
            error = pb_utils.TritonError(f"icrt: scoring failed ({type(e).__name__}: {e})")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for recs in records:
            outputs = outputs_for(recs)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses

    def finalize(self):
        self.scorer = None
