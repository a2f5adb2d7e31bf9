def batched_nms(*a, **k): raise NotImplementedError("shim")
def box_area(*a, **k): raise NotImplementedError("shim")
