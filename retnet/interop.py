"""Conversion from torchscale 0.3.0's `RetNetDecoder` (torchscale is not imported here: duck-typed)."""

from __future__ import annotations

import torch
from torch import nn

from retnet.config import RetNetConfig
from retnet.model import RetNet


def config_from_torchscale(decoder: nn.Module) -> RetNetConfig:
    """Our config for a torchscale 0.3.0 RetNetDecoder; raises on features we do not implement."""
    args = decoder.args
    unsupported = {
        "deepnorm": getattr(args, "deepnorm", False),
        "moe_freq": getattr(args, "moe_freq", 0),
        "multiway": getattr(args, "multiway", False),
        "decoder_normalize_before=False": not getattr(args, "decoder_normalize_before", True),
        "no output projection": decoder.output_projection is None,
        "no embed_tokens": decoder.embed_tokens is None,
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise NotImplementedError(f"from_torchscale does not support: {bad}")
    return RetNetConfig(
        name="torchscale",
        n_layers=args.decoder_layers,
        d_model=args.decoder_embed_dim,
        n_heads=args.decoder_retention_heads,
        vocab_size=decoder.embed_tokens.num_embeddings,
        value_dim=args.decoder_value_embed_dim,
        ffn_dim=args.decoder_ffn_embed_dim,
        decay="torchscale",
        norm="rmsnorm",
        head_norm="rmsnorm",
        ffn="glu",
        ffn_activation={"gelu": "gelu", "swish": "swish"}[str(args.activation_fn)],
        bias=False,
        eps=args.layernorm_eps,
        embed_scale=float(decoder.embed_scale),
        embed_norm=bool(args.layernorm_embedding),
        tie_embeddings=bool(args.share_decoder_input_output_embed),
        extra={"source": "torchscale 0.3.0 RetNetDecoder"},
    )


@torch.no_grad()
def from_torchscale(decoder: nn.Module) -> RetNet:
    """A `RetNet` with the same weights, device and dtype as a torchscale 0.3.0 `RetNetDecoder`."""
    cfg = config_from_torchscale(decoder)
    ref = decoder.embed_tokens.weight
    with torch.device("meta"):
        model = RetNet(cfg)
    model = model.to_empty(device=ref.device).to(ref.dtype)
    model.reset_parameters()  # also clears the per-device constant cache
    model.embed.weight.copy_(decoder.embed_tokens.weight)
    if not cfg.tie_embeddings:
        model.lm_head.weight.copy_(decoder.output_projection.weight)
    if cfg.embed_norm:
        model.embed_norm.weight.copy_(decoder.layernorm_embedding.weight)
    model.norm.weight.copy_(decoder.layer_norm.weight)
    for ours, theirs in zip(model.layers, decoder.layers, strict=True):
        ret = theirs.retention
        ours.retention_norm.weight.copy_(theirs.retention_layer_norm.weight)
        ours.retention.qkvg.weight.copy_(
            torch.cat([ret.q_proj.weight, ret.k_proj.weight, ret.v_proj.weight, ret.g_proj.weight], dim=0)
        )
        ours.retention.out_proj.weight.copy_(ret.out_proj.weight)
        ours.ffn_norm.weight.copy_(theirs.final_layer_norm.weight)
        ours.ffn.fc_in.weight.copy_(torch.cat([theirs.ffn.fc1.weight, theirs.ffn.gate.weight], dim=0))
        ours.ffn.fc_out.weight.copy_(theirs.ffn.fc2.weight)
    return model
