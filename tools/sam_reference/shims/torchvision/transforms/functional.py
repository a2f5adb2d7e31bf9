def resize(*a, **k): raise NotImplementedError("shim")
def to_pil_image(*a, **k): raise NotImplementedError("shim")
