"""The FID Inception-v3: the network, weights layout and preprocessing of pytorch-fid.

pytorch-fid ports the TensorFlow graph ``inception-2015-12-05`` used by the original FID code
(Heusel et al., 2017). It is torchvision's Inception-v3 with 1008 classes, no auxiliary head and
these differences, all kept here:

- the average pools inside ``Mixed_5b..5d`` (block A), ``Mixed_6b..6e`` (block C) and ``Mixed_7b``
  (first block E) ignore the zero padding (``count_include_pad=False``), as TensorFlow does;
- the pool branch of ``Mixed_7c`` (second block E) is a 3x3 *max* pool, not an average pool;
- BatchNorm uses ``eps=0.001``.

Module and parameter names match ``pt_inception-2015-12-05-6726825d.pth`` key for key, so that
file loads with ``load_state_dict`` (``num_batches_tracked`` entries are optional).

:class:`FIDInceptionV3` is the plain network (the reference). For inference, :meth:`fused`
returns a :class:`FusedInception`: BatchNorm folded into the convolutions, the 1x1 convolutions
that read the same input merged into one, the pool branch's 1x1 convolution moved before its
average pool (both are linear), ReLU in place. The maths is the same; float32 rounding differs by
about 1e-6 relative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
BN_EPS = 0.001


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool does not count the padded zeros.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # pytorch-fid's FIDInceptionA
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):  # Mixed_6a, as in torchvision
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):  # pytorch-fid's FIDInceptionC
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):  # Mixed_7a, as in torchvision
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """pytorch-fid's FIDInceptionE_1 (``pool="avg"``, Mixed_7b) and FIDInceptionE_2 (``"max"``)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(pool)
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            pooled = _avg_pool(x)
        else:  # the FID graph's quirk: a max pool in the last block
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Input: (B, 3, 299, 299) floats in [-1, 1]. Output: 2048-d pool features (and logits)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool features (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)

    def logits_unbiased(self, features: torch.Tensor) -> torch.Tensor:
        """The 1008 class logits without the fc bias, as torch-fidelity feeds the Inception Score."""
        return features @ self.fc.weight.T

    def fused(self) -> "FusedInception":
        return FusedInception(self)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the weights file and its shape (``num_batches_tracked`` included)."""
    with torch.device("meta"):
        model = FIDInceptionV3()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# The inference form


class _Conv(nn.Module):
    """A BasicConv2d with its BatchNorm folded in: conv with bias, then ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride, padding):
        super().__init__()
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return F.relu_(y) if relu else y


def _fold(block: BasicConv2d) -> tuple[torch.Tensor, torch.Tensor]:
    # Folded in float64, then back to float32: y = scale * conv(x) + shift.
    bn = block.bn
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = block.conv.weight.double() * scale[:, None, None, None]
    bias = bn.bias.double() - bn.running_mean.double() * scale
    return weight.float(), bias.float()


def _conv(block: BasicConv2d) -> _Conv:
    w, b = _fold(block)
    return _Conv(w, b, block.conv.stride, block.conv.padding)


def _merged_1x1(*blocks: BasicConv2d) -> tuple[_Conv, list[int]]:
    folded = [_fold(b) for b in blocks]
    w = torch.cat([f[0] for f in folded])
    b = torch.cat([f[1] for f in folded])
    return _Conv(w, b, 1, 0), [f[0].shape[0] for f in folded]


class _FusedA(nn.Module):
    def __init__(self, m: InceptionA):
        super().__init__()
        # One 1x1 convolution for the four branches that read x. The pool branch's conv is linear
        # and the TF average pool is a normalised linear map, so conv-then-pool equals
        # pool-then-conv: pool its few output channels instead of all input channels.
        self.head, self.split = _merged_1x1(m.branch1x1, m.branch5x5_1, m.branch3x3dbl_1, m.branch_pool)
        self.b5 = _conv(m.branch5x5_2)
        self.b3_2, self.b3_3 = _conv(m.branch3x3dbl_2), _conv(m.branch3x3dbl_3)

    def forward(self, x):
        h = self.head(x, relu=False)
        b1, b5, b3, bp = torch.split(h, self.split, 1)
        b1 = F.relu(b1)
        b5 = self.b5(F.relu(b5))
        b3 = self.b3_3(self.b3_2(F.relu(b3)))
        bp = F.relu_(_avg_pool(bp))
        return torch.cat([b1, b5, b3, bp], 1)


class _FusedB(nn.Module):
    def __init__(self, m: InceptionB):
        super().__init__()
        self.b3 = _conv(m.branch3x3)
        self.d1, self.d2, self.d3 = _conv(m.branch3x3dbl_1), _conv(m.branch3x3dbl_2), _conv(m.branch3x3dbl_3)

    def forward(self, x):
        return torch.cat([self.b3(x), self.d3(self.d2(self.d1(x))), F.max_pool2d(x, 3, 2)], 1)


class _FusedC(nn.Module):
    def __init__(self, m: InceptionC):
        super().__init__()
        self.head, self.split = _merged_1x1(m.branch1x1, m.branch7x7_1, m.branch7x7dbl_1, m.branch_pool)
        self.b7 = nn.ModuleList([_conv(m.branch7x7_2), _conv(m.branch7x7_3)])
        self.bd = nn.ModuleList(
            [_conv(m.branch7x7dbl_2), _conv(m.branch7x7dbl_3), _conv(m.branch7x7dbl_4), _conv(m.branch7x7dbl_5)]
        )

    def forward(self, x):
        h = self.head(x, relu=False)
        b1, b7, bd, bp = torch.split(h, self.split, 1)
        b1 = F.relu(b1)
        b7 = F.relu(b7)
        for conv in self.b7:
            b7 = conv(b7)
        bd = F.relu(bd)
        for conv in self.bd:
            bd = conv(bd)
        bp = F.relu_(_avg_pool(bp))
        return torch.cat([b1, b7, bd, bp], 1)


class _FusedD(nn.Module):
    def __init__(self, m: InceptionD):
        super().__init__()
        self.head, self.split = _merged_1x1(m.branch3x3_1, m.branch7x7x3_1)
        self.b3 = _conv(m.branch3x3_2)
        self.b7 = nn.ModuleList([_conv(m.branch7x7x3_2), _conv(m.branch7x7x3_3), _conv(m.branch7x7x3_4)])

    def forward(self, x):
        b3, b7 = torch.split(self.head(x), self.split, 1)
        b3 = self.b3(b3)
        for conv in self.b7:
            b7 = conv(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class _FusedE(nn.Module):
    def __init__(self, m: InceptionE):
        super().__init__()
        self.pool = m.pool
        heads = [m.branch1x1, m.branch3x3_1, m.branch3x3dbl_1]
        if self.pool == "avg":
            heads.append(m.branch_pool)
        else:  # max pool is not linear: its conv stays after the pool
            self.bp = _conv(m.branch_pool)
        self.head, self.split = _merged_1x1(*heads)
        self.b3_2a, self.b3_2b = _conv(m.branch3x3_2a), _conv(m.branch3x3_2b)
        self.d2 = _conv(m.branch3x3dbl_2)
        self.d3a, self.d3b = _conv(m.branch3x3dbl_3a), _conv(m.branch3x3dbl_3b)

    def forward(self, x):
        h = self.head(x, relu=False)
        parts = torch.split(h, self.split, 1)
        b1 = F.relu(parts[0])
        b3 = F.relu(parts[1])
        bd = self.d2(F.relu(parts[2]))
        if self.pool == "avg":
            bp = F.relu_(_avg_pool(parts[3]))
        else:
            bp = self.bp(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, self.b3_2a(b3), self.b3_2b(b3), self.d3a(bd), self.d3b(bd), bp], 1)


class FusedInception(nn.Module):
    """Inference-only FID Inception; same input and output as :class:`FIDInceptionV3`."""

    def __init__(self, model: FIDInceptionV3):
        super().__init__()
        m = model
        self.stem = nn.ModuleList([_conv(m.Conv2d_1a_3x3), _conv(m.Conv2d_2a_3x3), _conv(m.Conv2d_2b_3x3)])
        self.stem2 = nn.ModuleList([_conv(m.Conv2d_3b_1x1), _conv(m.Conv2d_4a_3x3)])
        self.mixed = nn.Sequential(
            _FusedA(m.Mixed_5b), _FusedA(m.Mixed_5c), _FusedA(m.Mixed_5d), _FusedB(m.Mixed_6a),
            _FusedC(m.Mixed_6b), _FusedC(m.Mixed_6c), _FusedC(m.Mixed_6d), _FusedC(m.Mixed_6e),
            _FusedD(m.Mixed_7a), _FusedE(m.Mixed_7b), _FusedE(m.Mixed_7c),
        )  # fmt: skip
        self.fc_weight = nn.Parameter(m.fc.weight.detach().clone(), requires_grad=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.stem:
            x = conv(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for conv in self.stem2:
            x = conv(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.mixed(x)
        return x.mean(dim=(2, 3))

    def logits_unbiased(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.fc_weight.T
