"""Shared helpers for the clip tests: tiny random models and a local HTTP file server."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import torch

from clip.model import build_model_from_config

# Tiny architectures (real vocabulary so that clip.tokenize ids are valid). Heads are inferred by
# build_model as width // 64, so widths are multiples of 64.
TINY_VIT = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                vision_patch_size=8, context_length=77, vocab_size=49408,
                transformer_width=64, transformer_heads=1, transformer_layers=2)
TINY_RESNET = dict(TINY_VIT, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                   vision_patch_size=None)


def tiny_model(config=TINY_VIT, seed: int = 0, **overrides):
    """A CLIP in eval mode with random weights drawn after ``torch.manual_seed(seed)``, from a
    config dict or a ``MODEL_CONFIGS`` name with ``overrides`` (``build_model_from_config``)."""
    torch.manual_seed(seed)
    return build_model_from_config(config, **overrides).eval()


def record_block_inputs(blocks):
    """Pre-hooks recording the (sequence-first) input of every block; returns (dict, handles)."""
    seen, handles = {}, []
    for i, b in enumerate(blocks):
        handles.append(b.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0].detach().clone())))
    return seen, handles


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)


def unused_port() -> int:
    """A local TCP port that nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """Serves ``routes[path] = bytes`` on 127.0.0.1; ``short[path] = n`` sends only n bytes
    (after announcing the full Content-Length) and closes the connection. Counts requests."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.short: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                n = server.short.get(self.path)
                self.wfile.write(body if n is None else body[:n])
                self.wfile.flush()
                if n is not None:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, name: str, data: bytes, digest: str | None = None) -> str:
        """Serve ``data`` at /<digest>/<name> (OpenAI's URL layout) and return its URL."""
        path = f"/{digest or sha256(data)}/{name}"
        self.routes[path] = data
        return self.base + path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)



# The backbone of the tests that run train.py end to end: ViT-B/16's layout at tiny sizes.
TINY_BACKBONE = dict(vision_layers=2, transformer_layers=2, vision_width=64, transformer_width=64,
                     transformer_heads=1, image_resolution=32, vision_patch_size=8, embed_dim=32)


def save_tiny_clip(path, layers: int = 2):
    """``TINY_BACKBONE`` with ``layers`` blocks per tower and random weights (``tiny_model``, seed
    0), its state dict saved to ``path``: a file ``MODEL.BACKBONE.NAME`` accepts. Returns ``path``."""
    model = tiny_model("ViT-B/16", **dict(TINY_BACKBONE, vision_layers=layers, transformer_layers=layers))
    torch.save(model.state_dict(), path)
    return path
