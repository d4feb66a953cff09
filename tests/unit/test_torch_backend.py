"""The forward context that serve and the trainer share (stream/backends/torch_backend.py)."""

from __future__ import annotations

import torch

from stream.backends.torch_backend import forward_context


def sdp_flags() -> dict[str, bool]:
    cuda = torch.backends.cuda
    return {
        "cudnn": cuda.cudnn_sdp_enabled(),
        "flash": cuda.flash_sdp_enabled(),
        "efficient": cuda.mem_efficient_sdp_enabled(),
        "math": cuda.math_sdp_enabled(),
    }


def test_cuda_forward_leaves_cudnn_attention_out_and_restores_it() -> None:
    before = sdp_flags()
    assert before["cudnn"], "torch's default changed: cuDNN attention is already off"
    # The flags are process-wide and need no GPU to read, so the CUDA branch runs here too.
    with forward_context(torch.device("cuda"), None):
        inside = sdp_flags()
    assert inside == {"cudnn": False, "flash": True, "efficient": True, "math": True}
    assert sdp_flags() == before


def test_cpu_forward_keeps_every_attention_kernel() -> None:
    before = sdp_flags()
    with forward_context(torch.device("cpu"), None):
        assert sdp_flags() == before
        assert not torch.is_autocast_enabled("cpu")


def test_dtype_turns_on_autocast_for_the_block_only() -> None:
    with forward_context(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
    assert out.dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
