"""Segment Anything in PyTorch, written for samtrack: the model (``modeling/``), a builder
registry (``build.py``) and weight conversion from the ONNX export (``convert.py``).

Importing this package needs PyTorch (the ``samtrack[torch]`` extra); the rest of samtrack
does not.
"""
