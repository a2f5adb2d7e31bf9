# Minimal stand-ins for the three timm names MobileSAM's TinyViT imports (inference only).
import torch.nn as nn
class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__(); self.drop_prob = drop_prob
    def forward(self, x):
        return x
def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)
def trunc_normal_(t, std=1.0, **kw):
    return nn.init.trunc_normal_(t, std=std)
