"""Typed intermediate representation: tensors, quantization, operators with typed attributes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np


class DType(enum.Enum):
    """Element types mcugen knows about (a subset of TFLite's TensorType)."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"
    OTHER = "other"

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1}.get(
            self.value, 1
        )

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value if self is not DType.OTHER else "uint8")

    @property
    def ctype(self) -> str:
        return {
            "float32": "float",
            "int8": "int8_t",
            "uint8": "uint8_t",
            "int16": "int16_t",
            "int32": "int32_t",
            "int64": "int64_t",
            "bool": "uint8_t",
        }.get(self.value, "uint8_t")


class Padding(enum.Enum):
    SAME = "SAME"
    VALID = "VALID"


class Activation(enum.Enum):
    NONE = "NONE"
    RELU = "RELU"
    RELU6 = "RELU6"
    RELU_N1_TO_1 = "RELU_N1_TO_1"
    OTHER = "OTHER"


class OpType(enum.Enum):
    CONV_2D = "CONV_2D"
    DEPTHWISE_CONV_2D = "DEPTHWISE_CONV_2D"
    FULLY_CONNECTED = "FULLY_CONNECTED"
    ADD = "ADD"
    SUB = "SUB"
    MINIMUM = "MINIMUM"
    MAXIMUM = "MAXIMUM"
    SQUARED_DIFFERENCE = "SQUARED_DIFFERENCE"
    MUL = "MUL"
    MEAN = "MEAN"
    SUM = "SUM"  # int8: TFLite Micro's QuantizedMeanOrSum without the 1/count (mcugen.oracle: its only oracle)
    REDUCE_MAX = "REDUCE_MAX"
    AVERAGE_POOL_2D = "AVERAGE_POOL_2D"
    MAX_POOL_2D = "MAX_POOL_2D"
    SOFTMAX = "SOFTMAX"
    LOGISTIC = "LOGISTIC"
    RESHAPE = "RESHAPE"
    PAD = "PAD"
    TRANSPOSE = "TRANSPOSE"
    QUANTIZE = "QUANTIZE"
    DEQUANTIZE = "DEQUANTIZE"
    CONCATENATION = "CONCATENATION"
    PADV2 = "PADV2"
    DEPTH_TO_SPACE = "DEPTH_TO_SPACE"
    SPACE_TO_DEPTH = "SPACE_TO_DEPTH"
    RELU = "RELU"
    RELU_N1_TO_1 = "RELU_N1_TO_1"
    RELU6 = "RELU6"
    LEAKY_RELU = "LEAKY_RELU"
    TANH = "TANH"
    HARD_SWISH = "HARD_SWISH"
    PRELU = "PRELU"
    RESIZE_NEAREST_NEIGHBOR = "RESIZE_NEAREST_NEIGHBOR"
    RESIZE_BILINEAR = "RESIZE_BILINEAR"
    SLICE = "SLICE"
    SPLIT = "SPLIT"  # SPLIT, SPLIT_V, UNPACK: rewritten into one SLICE per output (mcugen.split_ops)
    SPLIT_V = "SPLIT_V"
    UNPACK = "UNPACK"
    # shape arithmetic (STRIDED_SLICE also runs on int8 activations): evaluated at generation time by mcugen.fold when its inputs are known
    SHAPE = "SHAPE"
    STRIDED_SLICE = "STRIDED_SLICE"
    PACK = "PACK"
    GATHER = "GATHER"
    # issue 12's last ones: ARG_MAX/ARG_MIN write int32/int64 indices; SQUEEZE/EXPAND_DIMS become
    # RESHAPE views, PACK on activations a RESHAPE of each input and CONCATENATION (mcugen.view_ops)
    ARG_MAX = "ARG_MAX"
    ARG_MIN = "ARG_MIN"
    SQUEEZE = "SQUEEZE"
    EXPAND_DIMS = "EXPAND_DIMS"
    TRANSPOSE_CONV = "TRANSPOSE_CONV"  # inputs: output_shape, weights, data, bias (the data input is input 2)


@dataclass
class Quant:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per `axis`."""

    scale: np.ndarray  # float32, shape (n,)
    zero_point: np.ndarray  # int64, shape (n,)
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def s(self) -> float:
        """Per-tensor scale (the first one), as the float32 TFLite stores."""
        return float(np.float32(self.scale[0]))

    @property
    def zp(self) -> int:
        return int(self.zero_point[0])


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: DType
    quant: Optional[Quant] = None
    data: Optional[np.ndarray] = None  # constant data (already shaped), None for activations
    is_variable: bool = False

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


# ---- typed operator attributes -------------------------------------------------------


@dataclass(frozen=True)
class Conv2DAttrs:
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    padding: Padding
    activation: Activation


@dataclass(frozen=True)
class DepthwiseConv2DAttrs:
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    padding: Padding
    activation: Activation
    depth_multiplier: int


@dataclass(frozen=True)
class FullyConnectedAttrs:
    activation: Activation
    keep_num_dims: bool


@dataclass(frozen=True)
class ElementwiseAttrs:
    """ADD, SUB and MUL (MINIMUM, MAXIMUM and SQUARED_DIFFERENCE: no fused activation, NONE).
    `pot_scale_int16`: ADD/SUB's option for int16 data (TFLite's default, true, lets tflite-runtime
    take its power-of-two path when every scale is a power of two)."""

    activation: Activation
    pot_scale_int16: bool = True


@dataclass(frozen=True)
class Pool2DAttrs:
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    padding: Padding
    activation: Activation


@dataclass(frozen=True)
class MeanAttrs:
    """MEAN and REDUCE_MAX: the reduced axes (resolved, sorted, unique)."""

    axes: tuple[int, ...]
    keep_dims: bool


@dataclass(frozen=True)
class SoftmaxAttrs:
    beta: float


@dataclass(frozen=True)
class PadAttrs:
    paddings: tuple[tuple[int, int], ...]  # (before, after) per dimension


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...]


@dataclass(frozen=True)
class BlockAttrs:
    """DEPTH_TO_SPACE and SPACE_TO_DEPTH."""

    block: int


@dataclass(frozen=True)
class LeakyReluAttrs:
    alpha: float  # as stored (float32)


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int  # resolved to 0..rank-1
    activation: Activation


@dataclass(frozen=True)
class ResizeAttrs:
    """RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR (the output size is the output's H, W)."""

    align_corners: bool
    half_pixel_centers: bool


@dataclass(frozen=True)
class StridedSliceAttrs:
    begin_mask: int
    end_mask: int
    ellipsis_mask: int
    new_axis_mask: int
    shrink_axis_mask: int
    offset: bool


@dataclass(frozen=True)
class PackAttrs:
    axis: int
    values_count: int


@dataclass(frozen=True)
class GatherAttrs:
    axis: int
    batch_dims: int


@dataclass(frozen=True)
class ArgMinMaxAttrs:
    """ARG_MAX and ARG_MIN: the axis (resolved to 0..rank-1) whose first extreme index is taken,
    and the index type the options name (tflite-runtime types the output by it; None: absent)."""

    axis: int
    output_type: Optional[DType] = None


@dataclass(frozen=True)
class SqueezeAttrs:
    """SQUEEZE: the axes to drop as stored (may be negative; empty: every axis of size 1)."""

    squeeze_dims: tuple[int, ...]


@dataclass(frozen=True)
class TransposeConvAttrs:
    """TRANSPOSE_CONV (dilation is always 1; activation NONE before the schema's version 4)."""

    stride_h: int
    stride_w: int
    padding: Padding
    activation: Activation


@dataclass(frozen=True)
class NoAttrs:
    """RESHAPE, LOGISTIC, QUANTIZE, DEQUANTIZE: everything needed is in the tensors."""


OpAttrs = Union[
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    FullyConnectedAttrs,
    ElementwiseAttrs,
    Pool2DAttrs,
    MeanAttrs,
    SoftmaxAttrs,
    PadAttrs,
    TransposeAttrs,
    ConcatAttrs,
    LeakyReluAttrs,
    BlockAttrs,
    ResizeAttrs,
    StridedSliceAttrs,
    PackAttrs,
    GatherAttrs,
    ArgMinMaxAttrs,
    SqueezeAttrs,
    TransposeConvAttrs,
    NoAttrs,
]


@dataclass
class Operator:
    index: int
    op: OpType
    inputs: list[int]  # tensor indices; -1 for an omitted optional input
    outputs: list[int]
    attrs: OpAttrs = field(default_factory=NoAttrs)

    def describe(self) -> str:
        return f"operator {self.index} ({self.op.value})"


@dataclass
class Graph:
    name: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def t(self, index: int) -> Tensor:
        return self.tensors[index]

    def op_inputs(self, op: Operator) -> list[Optional[Tensor]]:
        return [self.tensors[i] if i >= 0 else None for i in op.inputs]

    def op_outputs(self, op: Operator) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs]

    def activation_tensors(self) -> list[Tensor]:
        """Non-constant tensors that the operators or the graph use."""
        used: set[int] = set(self.inputs) | set(self.outputs)
        for op in self.operators:
            used.update(i for i in op.inputs if i >= 0)
            used.update(op.outputs)
        return [self.tensors[i] for i in sorted(used) if not self.tensors[i].is_const]

    def macs(self) -> int:
        return sum(op_macs(self, op) for op in self.operators)


def op_macs(graph: Graph, op: Operator) -> int:
    """Multiply-accumulates of one operator (0 for data movement)."""
    ins = graph.op_inputs(op)
    out = graph.t(op.outputs[0])
    if op.op is OpType.CONV_2D:
        w = ins[1]
        return out.size * w.shape[1] * w.shape[2] * w.shape[3]
    if op.op is OpType.DEPTHWISE_CONV_2D:
        w = ins[1]
        return out.size * w.shape[1] * w.shape[2]
    if op.op is OpType.FULLY_CONNECTED:
        w = ins[1]
        return out.size * w.shape[-1]
    if op.op in (OpType.ADD, OpType.SUB, OpType.MUL, OpType.SQUARED_DIFFERENCE):
        return out.size
    if op.op is OpType.AVERAGE_POOL_2D:
        a = op.attrs
        return out.size * a.filter_h * a.filter_w
    if op.op in (OpType.MEAN, OpType.SUM):
        return ins[0].size
    if op.op is OpType.TRANSPOSE_CONV:
        # the products that land inside the output (TFLite's scatter drops the others)
        from mcugen.supported_more import transpose_conv_pads

        x, w = ins[2], ins[1]
        pad_t, pad_l = transpose_conv_pads(op.attrs, out.shape, w.shape)

        def pairs(n_in: int, k: int, stride: int, pad: int, n_out: int) -> int:
            # per tap j, the inputs i with 0 <= i * stride - pad + j < n_out and 0 <= i < n_in
            total = 0
            for j in range(k):
                lo = max(0, -((j - pad) // stride))
                hi = min(n_in - 1, (n_out - 1 + pad - j) // stride)
                total += max(0, hi - lo + 1)
            return total

        return (x.shape[0] * w.shape[0] * w.shape[3] * pairs(x.shape[1], w.shape[1], op.attrs.stride_h, pad_t, out.shape[1])
                * pairs(x.shape[2], w.shape[2], op.attrs.stride_w, pad_l, out.shape[2]))
    return 0
