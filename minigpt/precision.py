"""Mixed precision: the matrix products in 16 bits, the weights and the sums that need digits in 32.

`torch.autocast` picks a dtype per operation inside the forward pass (matmuls in bfloat16 or
float16, softmax, norms and the loss in float32); the weights, their gradients and the optimizer's
state stay float32 (the "master weights"), so checkpoints are float32 whatever the run's dtype.
float16 has a narrow range (nothing normal below 6e-5), so its small gradients would round to zero:
a gradient scaler multiplies the loss before backward and divides the gradients back before the
update. bfloat16 has float32's range and needs no scaler.
"""

from __future__ import annotations

import contextlib

import torch

from minigpt.config import ConfigError

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype called `name`, refused (naming `dtype`) where `device` cannot run it."""
    if name not in TORCH_DTYPES:
        raise ConfigError("dtype", f"one of {', '.join(TORCH_DTYPES)}", name)
    dtype = TORCH_DTYPES[name]
    if dtype == torch.float32:
        return dtype
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("dtype", f"float32 or float16 on this GPU ({torch.cuda.get_device_name(device)} "
                          f"has no bfloat16 arithmetic)", name)
    try:  # the one sure test: a small product under autocast, on the device itself
        with autocast(device, dtype):
            product = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        if product.dtype != dtype:
            raise RuntimeError(f"autocast ran the product in {product.dtype}")
    except RuntimeError as error:
        raise ConfigError("dtype", f"float32 on {device.type} (it cannot run {name} under "
                          f"autocast: {error})", name) from None
    return dtype


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The forward pass's context: autocast to `dtype`, or nothing at all for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gradient_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A scaler that works for float16 and, disabled, passes everything through for the others."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
