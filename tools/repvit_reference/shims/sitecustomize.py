"""Stubs for the packages the official RepViT-SAM / EdgeSAM code imports but these checks never
run (see ../README.md). Python imports this file at start-up when its folder is on PYTHONPATH.

Every module under a stubbed top-level name is an empty package whose attributes are classes
that raise when instantiated (and whose own attributes are strings, for enum-like uses such as
torchvision's ``InterpolationMode.NEAREST`` at timm's import time): an import succeeds, a call
fails loudly.
"""
import importlib.abc
import importlib.machinery
import sys
import types

# torchvision: the real timm imports it (its wheels are built for another torch); mmdet,
# mmengine, projects: EdgeSAM's optional RPN heads; loralib: EdgeSAM's LoRA training.
_STUBBED = {"torchvision", "mmdet", "mmengine", "projects", "loralib"}


class _Members(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"


class _Unusable(metaclass=_Members):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is a stub (tools/repvit_reference/shims)")


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_Unusable,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0"
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())
