"""Shape arithmetic as TFLite defines it: output sizes, SAME padding, broadcasting, the window limits of its kernels."""

from __future__ import annotations

from typing import Optional

from mcugen.ir import Padding


def out_size(in_size: int, filt: int, stride: int, dilation: int, padding: Padding) -> int:
    """TFLite's ComputeOutSize."""
    eff = (filt - 1) * dilation + 1
    if padding is Padding.SAME:
        return (in_size + stride - 1) // stride
    return (in_size - eff + stride) // stride


def same_padding(in_size: int, filt: int, stride: int, dilation: int, out: int, padding: Padding) -> int:
    """TFLite's ComputePaddingWithOffset: the top/left padding (the extra goes bottom/right)."""
    if padding is Padding.VALID:
        return 0
    eff = (filt - 1) * dilation + 1
    total = max((out - 1) * stride + eff - in_size, 0)
    return total // 2


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> Optional[tuple[int, ...]]:
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


INT16_MAX = 2**15 - 1
INT32_MAX = 2**31 - 1


def window_problem(
    in_hw: tuple[int, int], filt: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
    out_hw: tuple[int, int], padding: Padding, int16_stride: bool,
) -> Optional[str]:
    """Window parameters TFLite's kernels cannot hold: their parameter structs keep padding (and,
    for convolutions, stride and dilation) in int16 fields and size arithmetic in int; a larger
    value would be silently truncated by the reference kernels, so it is refused here."""
    for axis, i, k, st, d, o in zip("hw", in_hw, filt, stride, dilation, out_hw):
        eff = (k - 1) * d + 1
        if eff > INT32_MAX or (o - 1) * st + eff > INT32_MAX:
            return f"has a {axis} window ({k} taps, dilation {d}, stride {st}) that overflows 32-bit size arithmetic"
        if int16_stride and (st > INT16_MAX or d > INT16_MAX):
            return f"has {axis} stride {st} and dilation {d}; TFLite's kernels hold them in 16 bits (at most {INT16_MAX})"
        pad = same_padding(i, k, st, d, o, padding)
        if pad > INT16_MAX:
            return f"needs {axis} padding {pad}; TFLite's kernels hold padding in 16 bits (at most {INT16_MAX})"
    return None


def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Element strides of an operand of `shape` read at each index of the rank-4 `out_shape` it
    broadcasts to (NumPy rules, leading axes of size 1): 0 along an axis it is repeated on."""
    out4 = (1,) * (4 - len(out_shape)) + tuple(out_shape)
    s4 = (1,) * (4 - len(shape)) + tuple(shape)
    st, acc = [0, 0, 0, 0], 1
    for d in range(3, -1, -1):
        st[d] = 0 if s4[d] == 1 and out4[d] != 1 else acc
        acc *= s4[d]
    return (st[0], st[1], st[2], st[3])
