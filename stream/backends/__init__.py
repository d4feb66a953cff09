"""Numeric backends behind one seam: what serving and evaluation need from a model.

`base.Backend` is the protocol; `torch` (stream.inference today) is the first implementation and
ONNX Runtime the next. The text pipeline is not a backend's business: every backend receives
texts already cleaned by the artifact's pipeline, which is what keeps training and serving equal.
"""
