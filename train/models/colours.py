"""Colour counts: the log of the number of distinct colours of an image at a few quantisations (ColourCounts)."""
from __future__ import annotations

import torch
from torch import nn


class ColourCounts(nn.Module):
    """Normalised input [N, 3, H, W] -> [N, len(bits)]: log of the number of distinct colours at k bits per channel.

    The uint8 pixels are recovered from the normalised input, ``p = clamp(round(x * 255 std + 255 mean), 0, 255)``
    (exact for inputs made as ``(p / 255 - mean) / std`` in fp32), and for each k in ``bits`` the colour code
    ``(r >> (8-k)) << 2k | (g >> (8-k)) << k | (b >> (8-k))`` is formed; the output is the log of how many distinct
    codes an image has (1 colour -> 0), image by image. ``stride``: only every stride-th pixel of every stride-th row
    is counted (the default model: 2, a quarter of the pixels and of the cost; as good in cross-validation).

    Counted as occupancy, not as a histogram: ones are scattered into a zero tensor [N, 2^(3 kmax)] at the codes of the
    finest quantisation with ``scatter_`` and no reduction (ONNX ScatterElements with reduction "none", which
    TensorRT's core implements; "add" needs a plugin that fails when indices outnumber outputs). A coarser k is the
    same occupancy grouped per channel and max-reduced over the fine bits, so one scatter serves every k.

    From the recovered pixels on, everything is int32 (codes, occupancy, counts) up to the final log: codes reach
    2^(3 kmax) - 1 (32767 at kmax = 5), which fp16 and bf16 cannot hold, and a backend may run float operations in
    those (OpenVINO's bf16 hint did, and its scatter then refused the rounded indices). The pixels come back as
    ``round(x * 255 std + 255 mean)``: for TF-Lite normalisation ``x * 128 + 127``, exact in bf16 too. Export keeps
    this module in fp32 when the model registers it as part of its fp32 tail (its fp16 and int8 files read the
    unrounded input: ``export.fp16.tail_reads_fp32``, ``export.int8.tail_reads_inputs``).
    """

    def __init__(self, mean, std, bits=(3, 4, 5), stride: int = 1):
        super().__init__()
        if int(stride) < 1:
            raise ValueError(f"stride {stride}: expected a positive integer")
        self.stride = int(stride)
        bits = tuple(int(k) for k in bits)
        if not bits or any(k < 1 or k > 8 for k in bits) or len(set(bits)) != len(bits):
            raise ValueError(f"bits {list(bits)}: expected distinct bit depths from 1 to 8")
        self.bits = bits
        self.kmax = max(bits)
        k = self.kmax
        # p = x * std * 255 + mean * 255: for TF-Lite normalisation 128 and 127, exact even in bf16
        scale = [float(s) * 255.0 for s in std]
        offset = [float(m) * 255.0 for m in mean]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # r << 2k | g << k | b as a weighted sum over the channels, in int32
        self.register_buffer("weights", torch.tensor([4**k, 2**k, 1], dtype=torch.int32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kmax
        if self.stride > 1:  # every stride-th pixel each way (a Slice with steps)
            x = x[:, :, ::self.stride, ::self.stride]
        p = torch.round(x.float() * self.scale + self.offset).clamp(0.0, 255.0).to(torch.int32)
        # integers from here on: a backend running floats in bf16 or fp16 (OpenVINO's bf16 hint) cannot round a code
        q = torch.div(p, 2 ** (8 - k), rounding_mode="trunc")  # p >> (8 - kmax); p >= 0, so trunc is floor
        code = (q * self.weights).sum(1, dtype=torch.int32).flatten(1)  # [N, H*W], < 2^(3 kmax)
        # zeros [N, 2^(3 kmax)] by broadcasting, not from the batch size as a value (Gather(Shape(x), 0)): with that
        # chain in an int8 graph, OpenVINO 2026.4's CPU plugin took N from the second backbone's stem convolution
        # and dropped that convolution's bias (every Lite1 feature wrong; scores at SRCC 0.944 against fp32)
        zeros = torch.zeros((1, 2 ** (3 * k)), dtype=torch.int32, device=x.device)
        occupied = code[:, :1] * zeros
        occupied.scatter_(1, code.long(), torch.ones_like(code))
        out = []
        for b in self.bits:
            if b == k:
                counts = occupied.sum(1, dtype=torch.int32)
            else:
                fine = 2 ** (k - b)  # r, g, b each split into (coarse, fine) bits; the fine ones are max-reduced
                grouped = occupied.reshape(-1, 2**b, fine, 2**b, fine, 2**b, fine).amax((2, 4, 6))
                counts = grouped.flatten(1).sum(1, dtype=torch.int32)
            out.append(counts)
        return torch.log(torch.stack(out, 1).float())
