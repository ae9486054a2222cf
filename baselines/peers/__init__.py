"""Official-code peers: the published RetNet / Transformer implementations, run through their own decoding, one
module per library (torchscale.py, fla.py) over a shared interface (base.py). The contestant specs that name them
live in suites/contestants/peers.py."""
from .base import PREFILL_NOTE, Peer, glu_ffn_dim
from .fla import (FLA_INSTALL, FLA_VERSION, FlaRetNetPeer, build_fla_retnet, build_fla_retnet_peer, fla_available,
                  fla_retnet_kwargs, fla_retnet_param_count)
from .torchscale import (TORCHSCALE_INSTALL, TorchscaleRetNetPeer, TorchscaleTransformerPeer, build_torchscale_retnet,
                         build_torchscale_for_training, build_torchscale_retnet_peer, build_torchscale_transformer,
                         build_torchscale_transformer_peer,
                         torchscale_available, torchscale_retnet_args, torchscale_transformer_args)

__all__ = [
    "PREFILL_NOTE", "Peer", "glu_ffn_dim", "FLA_INSTALL", "FLA_VERSION", "FlaRetNetPeer", "build_fla_retnet",
    "build_fla_retnet_peer", "fla_available", "fla_retnet_kwargs", "fla_retnet_param_count", "TORCHSCALE_INSTALL",
    "TorchscaleRetNetPeer", "TorchscaleTransformerPeer", "build_torchscale_for_training", "build_torchscale_retnet",
    "build_torchscale_retnet_peer",
    "build_torchscale_transformer", "build_torchscale_transformer_peer", "torchscale_available",
    "torchscale_retnet_args", "torchscale_transformer_args",
]
