"""CMSIS-NN kernel pass (a peer of mcugen's own kernels): replaces kernel calls by calls to Arm's CMSIS-NN library.

    lower(graph) -> Program --to_cmsis_nn(program, target, path)--> KernelPassResult
        .program  layers CMSIS-NN covers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
                  ADD and MUL without broadcasting, AVERAGE_POOL_2D, MAX_POOL_2D, SOFTMAX)
                  call `<name>_l<i>_cmsis()`, which fills CMSIS-NN's parameter structs
                  exactly as TFLite Micro's CMSIS-NN kernels do and calls
                  `arm_convolve_wrapper_s8`, `arm_depthwise_conv_wrapper_s8`,
                  `arm_fully_connected_wrapper_s8`, `arm_elementwise_add_s8`,
                  `arm_elementwise_mul_s8`, `arm_avgpool_s8`, `arm_max_pool_s8` or
                  `arm_softmax_s8`; every other layer keeps mcugen's portable kernel.
        .files    `<name>_cmsis_nn.c/.h`, one `cmsis_nn_<source>.c` per CMSIS-NN source file the
                  calls need (each only #includes that file of the checkout: nothing of
                  CMSIS-NN is copied), and a `mcugen_kernels.h` declaring both kinds of kernel
        .scratch  one buffer per layer whose CMSIS-NN function wants one, of the size its
                  `*_get_buffer_size` function returns for the target (computed by compiling
                  and running those functions of the checkout on the host)
        .cflags   -I<checkout>/Include -I<checkout>/Source

The checkout comes from `--cmsis-nn PATH` or the CMSIS_NN_PATH environment variable
(`cmsis_nn_path`); CMSIS-NN is never vendored into mcugen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mcugen.errors import ToolError
from mcugen.kernels.base import KernelPassResult, ScratchBuffer, conv_view, fc_view, place_scratch
from mcugen.kernels.base import layer_params as _p
from mcugen.kernels.requant import wrap32
from mcugen.lower import ArenaArg, ConstArg, ConstArray, Layer, NullArg, Program
from mcugen.targets import Isa, Target

ENV_VAR = "CMSIS_NN_PATH"
_REQUIRED = ("Include/arm_nnfunctions.h", "Include/arm_nn_types.h", "Source")


def cmsis_nn_path(explicit: Optional[str | os.PathLike] = None) -> Path:
    """The CMSIS-NN checkout: `explicit` (--cmsis-nn), else $CMSIS_NN_PATH; ToolError if
    neither is set or the folder is not a CMSIS-NN checkout."""
    raw = explicit if explicit is not None else os.environ.get(ENV_VAR)
    if not raw:
        raise ToolError(
            f"the cmsis-nn kernels need a CMSIS-NN checkout: pass --cmsis-nn PATH or set {ENV_VAR} "
            "(git clone https://github.com/ARM-software/CMSIS-NN)"
        )
    path = Path(raw).expanduser().resolve()
    missing = [r for r in _REQUIRED if not (path / r).exists()]
    if missing:
        raise ToolError(f"{path} is not a CMSIS-NN checkout: {', '.join(missing)} not found")
    return path


# ---- the library's sources ----------------------------------------------------------------

_DEFINITION_START = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(arm_\w+)\s*\(", re.MULTILINE)
_REFERENCE = re.compile(r"\b(arm_\w+)\s*\(")


@dataclass(frozen=True)
class SourceIndex:
    """Which CMSIS-NN source file defines which function, and what each file calls."""

    root: Path
    defines: dict[str, str]  # function -> file (relative to Source/)
    calls: dict[str, frozenset[str]]  # file -> functions it references

    def closure(self, functions: set[str]) -> list[str]:
        """The source files that define `functions` and everything they call, sorted."""
        files: set[str] = set()
        todo = [f for f in functions if f in self.defines]
        seen: set[str] = set()
        while todo:
            fn = todo.pop()
            if fn in seen:
                continue
            seen.add(fn)
            path = self.defines[fn]
            if path not in files:
                files.add(path)
                todo.extend(c for c in self.calls[path] if c in self.defines and c not in seen)
        return sorted(files)


def _definitions(text: str) -> list[str]:
    """Names of the arm_* functions defined (not declared) at file scope in C `text`."""
    names = []
    for m in _DEFINITION_START.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        rest = text[i:].lstrip()
        if rest.startswith("{"):
            names.append(m.group(1))
    return names


_index_cache: dict[Path, SourceIndex] = {}


def source_index(root: Path) -> SourceIndex:
    """Scan <root>/Source/*/*.c (not the Python bindings) for definitions and calls."""
    root = Path(root)
    if root in _index_cache:
        return _index_cache[root]
    defines: dict[str, str] = {}
    calls: dict[str, frozenset[str]] = {}
    for path in sorted((root / "Source").glob("*/*.c")):
        rel = path.relative_to(root / "Source").as_posix()
        if rel.startswith("Bindings/"):
            continue
        text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", path.read_text(errors="replace"), flags=re.DOTALL)
        for name in _definitions(text):
            defines.setdefault(name, rel)
        calls[rel] = frozenset(_REFERENCE.findall(text))
    index = SourceIndex(root=root, defines=defines, calls=calls)
    _index_cache[root] = index
    return index


def source_wrapper_name(rel: str) -> str:
    """The model file that compiles one CMSIS-NN source: cmsis_nn_<stem>.c."""
    return f"cmsis_nn_{Path(rel).stem}.c"


# ---- layer plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    n: int
    h: int
    w: int
    c: int


@dataclass(frozen=True)
class CmsisPlan:
    """One layer's CMSIS-NN call: `kind` selects the template macro; `fields` its values."""

    kind: str
    name: str
    index: int
    function: str  # the CMSIS-NN API function called
    fields: dict
    arena_args: tuple[ArenaArg, ...]  # the wrapper's parameters, in order (inputs, output)
    arg_bytes: tuple[int, ...]  # bytes of each of them
    buffer_query: Optional[str]  # C expression computing the buffer size (host helper), or None
    scratch_offset: int = -1
    scratch_bytes: int = 0  # the CMSIS-NN function's buffer
    copies: tuple[tuple[int, int], ...] = ()  # (input k, offset in scratch) copied before the call
    copy_bytes: int = 0  # scratch bytes holding those copies (the function's buffer follows)

    @property
    def overlapping_inputs(self) -> list[int]:
        """Inputs whose bytes the plan lets the output share: CMSIS-NN gives no in-place
        guarantee, so the wrapper first copies them to scratch."""
        out, out_n = self.arena_args[-1].offset, self.arg_bytes[-1]
        return [
            k for k, (a, n) in enumerate(zip(self.arena_args[:-1], self.arg_bytes[:-1]))
            if max(a.offset, out) < min(a.offset + n, out + out_n)
        ]

    @property
    def param_names(self) -> list[str]:
        """C names of the wrapper's arena parameters: input or input0/input1, then output."""
        ins = [a for a in self.arena_args if a.const]
        names = ["input" if len(ins) == 1 else f"input{k}" for k in range(len(ins))]
        return names + ["output"]


class _Lowering:
    def __init__(self, program: Program, target: Target):
        self.p = program
        self.t = target
        self.name = program.name
        self.consts = {c.cname: c for c in program.consts}
        self.new_consts: list[ConstArray] = []

    def suffix(self) -> str:
        return {Isa.DSP: "_dsp", Isa.MVE: "_mve"}.get(self.t.isa, "")

    def conv(self, layer: Layer) -> Optional[CmsisPlan]:
        v = conv_view(layer, self.consts)
        if v.depthwise:
            if v.batches != 1:
                return None  # CMSIS-NN's depthwise wrapper assumes batch 1
            fields = dict(
                input_offset=v.input_offset, output_offset=v.output_offset, ch_mult=v.depth_multiplier,
                stride=(v.sw, v.sh), padding=(v.pad_l, v.pad_t), dilation=(v.dw, v.dh), act=(v.act_min, v.act_max),
                input_dims=Dims(v.batches, v.in_h, v.in_w, v.in_c), filter_dims=Dims(1, v.kh, v.kw, v.out_c),
                bias_dims=Dims(1, 1, 1, v.out_c), output_dims=Dims(v.batches, v.out_h, v.out_w, v.out_c),
                weights=layer.args[2].cname, bias=_cname(layer.args[3]), multiplier=layer.args[4].cname,
                shift=layer.args[5].cname,
            )
            query = "arm_depthwise_conv_wrapper_s8_get_buffer_size" + self.suffix() + "(&dw_conv_params, &input_dims, &filter_dims, &output_dims)"
            return CmsisPlan("depthwise", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_depthwise_conv_wrapper_s8",
                             fields, (layer.args[1], layer.args[6]), (_nbytes(fields["input_dims"]), _nbytes(fields["output_dims"])), query)
        fields = dict(
            input_offset=v.input_offset, output_offset=v.output_offset,
            stride=(v.sw, v.sh), padding=(v.pad_l, v.pad_t), dilation=(v.dw, v.dh), act=(v.act_min, v.act_max),
            input_dims=Dims(v.batches, v.in_h, v.in_w, v.in_c), filter_dims=Dims(v.out_c, v.kh, v.kw, v.in_c),
            bias_dims=Dims(1, 1, 1, v.out_c), output_dims=Dims(v.batches, v.out_h, v.out_w, v.out_c),
            weights=layer.args[2].cname, bias=_cname(layer.args[3]), multiplier=layer.args[4].cname,
            shift=layer.args[5].cname,
        )
        query = "arm_convolve_wrapper_s8_get_buffer_size" + self.suffix() + "(&conv_params, &input_dims, &filter_dims, &output_dims)"
        return CmsisPlan("conv", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_convolve_wrapper_s8",
                         fields, (layer.args[1], layer.args[6]), (_nbytes(fields["input_dims"]), _nbytes(fields["output_dims"])), query)

    def fully_connected(self, layer: Layer) -> Optional[CmsisPlan]:
        v = fc_view(layer, self.consts)
        per_channel = bool(_p(layer)["per_channel"])
        kernel_sum = None
        if self.t.isa is Isa.MVE:
            # What TFLite Micro computes once with arm_vector_sum_s8 in Prepare: per unit,
            # bias + input_offset * sum(weights). Here it is a constant table in flash.
            sums = wrap32(v.bias + v.input_offset * v.weights.sum(axis=1))
            kernel_sum = f"{self.name}_l{layer.index}_kernel_sum"
            self.new_consts.append(ConstArray(kernel_sum, "int32_t", sums.astype(np.int32),
                                              "arm_vector_sum_s8: bias + input_offset * sum(weights) per unit"))
        fields = dict(
            input_offset=v.input_offset, filter_offset=0, output_offset=v.output_offset, act=(v.act_min, v.act_max),
            per_channel=int(per_channel),
            input_dims=Dims(v.batches, 1, 1, v.depth), filter_dims=Dims(v.depth, 1, 1, v.units),
            bias_dims=Dims(1, 1, 1, v.units), output_dims=Dims(v.batches, 1, 1, v.units),
            weights=layer.args[2].cname, bias=_cname(layer.args[3]), multiplier=layer.args[4].cname,
            shift=layer.args[5].cname, kernel_sum=kernel_sum,
        )
        # The MVE buffer holds the kernel sums; they are a constant table here instead.
        query = None if self.t.isa is Isa.MVE else "arm_fully_connected_s8_get_buffer_size" + self.suffix() + "(&filter_dims)"
        return CmsisPlan("fc", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_fully_connected_wrapper_s8",
                         fields, (layer.args[1], layer.args[6]), (_nbytes(fields["input_dims"]), _nbytes(fields["output_dims"])), query)

    def _no_broadcast(self, layer: Layer) -> bool:
        p = _p(layer)
        shape = tuple(p["out_shape"])
        dense = []
        acc = 1
        for d in range(3, -1, -1):
            dense.insert(0, acc)
            acc *= shape[d]
        return tuple(p["in1_strides"]) == tuple(dense) and tuple(p["in2_strides"]) == tuple(dense) and \
            all(isinstance(a, ArenaArg) for a in layer.args[1:3])

    def add(self, layer: Layer) -> Optional[CmsisPlan]:
        if not self._no_broadcast(layer):
            return None  # as TFLite Micro: broadcasting falls back to the reference kernel
        p = _p(layer)
        fields = {k: int(p[k]) for k in (
            "input1_offset", "input1_multiplier", "input1_shift", "input2_offset", "input2_multiplier",
            "input2_shift", "left_shift", "output_offset", "output_multiplier", "output_shift", "act_min", "act_max")}
        fields["size"] = int(np.prod(p["out_shape"]))
        return CmsisPlan("add", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_elementwise_add_s8",
                         fields, (layer.args[1], layer.args[2], layer.args[3]), (fields["size"],) * 3, None)

    def mul(self, layer: Layer) -> Optional[CmsisPlan]:
        if not self._no_broadcast(layer):
            return None
        p = _p(layer)
        fields = {k: int(p[k]) for k in ("input1_offset", "input2_offset", "output_offset", "output_multiplier",
                                         "output_shift", "act_min", "act_max")}
        fields["size"] = int(np.prod(p["out_shape"]))
        return CmsisPlan("mul", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_elementwise_mul_s8",
                         fields, (layer.args[1], layer.args[2], layer.args[3]), (fields["size"],) * 3, None)

    def _pool(self, layer: Layer, avg: bool) -> Optional[CmsisPlan]:
        p = _p(layer)
        fields = dict(
            stride=(int(p["stride_w"]), int(p["stride_h"])), padding=(int(p["pad_left"]), int(p["pad_top"])),
            act=(int(p["act_min"]), int(p["act_max"])),
            input_dims=Dims(int(p["batches"]), int(p["in_h"]), int(p["in_w"]), int(p["channels"])),
            filter_dims=Dims(1, int(p["filter_h"]), int(p["filter_w"]), 1),
            output_dims=Dims(int(p["batches"]), int(p["out_h"]), int(p["out_w"]), int(p["channels"])),
        )
        if avg:
            query = "arm_avgpool_s8_get_buffer_size" + self.suffix() + f"({int(p['out_w'])}, {int(p['channels'])})"
            return CmsisPlan("avgpool", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_avgpool_s8",
                             fields, (layer.args[1], layer.args[2]), (_nbytes(fields["input_dims"]), _nbytes(fields["output_dims"])), query)
        return CmsisPlan("maxpool", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_max_pool_s8",
                         fields, (layer.args[1], layer.args[2]), (_nbytes(fields["input_dims"]), _nbytes(fields["output_dims"])), None)

    def avgpool(self, layer: Layer) -> Optional[CmsisPlan]:
        return self._pool(layer, True)

    def maxpool(self, layer: Layer) -> Optional[CmsisPlan]:
        return self._pool(layer, False)

    def softmax(self, layer: Layer) -> Optional[CmsisPlan]:
        p = _p(layer)
        fields = {k: int(p[k]) for k in ("outer", "depth", "input_multiplier", "input_left_shift", "diff_min")}
        n = fields["outer"] * fields["depth"]
        return CmsisPlan("softmax", f"{self.name}_l{layer.index}_cmsis", layer.index, "arm_softmax_s8",
                         fields, (layer.args[1], layer.args[2]), (n, n), None)


def _nbytes(d: Dims) -> int:
    return d.n * d.h * d.w * d.c


def _cname(arg) -> Optional[str]:
    return arg.cname if isinstance(arg, ConstArg) else None


_DISPATCH = {
    "mcugen_conv2d_s8": "conv",
    "mcugen_depthwise_conv2d_s8": "conv",
    "mcugen_depthwise_conv2d_inplace_s8": "conv",
    "mcugen_fully_connected_s8": "fully_connected",
    "mcugen_add_s8": "add",
    "mcugen_mul_s8": "mul",
    "mcugen_avgpool_s8": "avgpool",
    "mcugen_maxpool_s8": "maxpool",
    "mcugen_softmax_s8": "softmax",
}

# Functions whose sources the calls need beyond the API functions (none today; kept explicit).
_EXTRA_FUNCTIONS: frozenset[str] = frozenset()


# ---- buffer sizes, from the library itself -----------------------------------------------------

_sizes_cache: dict[str, list[int]] = {}


def buffer_sizes(root: Path, plans: list[CmsisPlan]) -> dict[int, int]:
    """Bytes of scratch each plan's CMSIS-NN function wants (0: none), by layer index, from the
    checkout's own *_get_buffer_size functions compiled and run on the host."""
    queried = [pl for pl in plans if pl.buffer_query]
    if not queried:
        return {pl.index: 0 for pl in plans}
    from mcugen import codegen

    source = codegen.environment().get_template("c/cmsis_nn/buffer_sizes.c.j2").render(plans=queried)
    functions = {re.match(r"(\w+)\(", pl.buffer_query).group(1) for pl in queried}
    index = source_index(root)
    missing = sorted(f for f in functions if f not in index.defines)
    if missing:
        raise ToolError(f"{root}: this CMSIS-NN version has no {', '.join(missing)}; mcugen needs one with the *_get_buffer_size API")
    files = index.closure(functions)
    key = hashlib.sha256((str(root) + "\n" + source + "\n".join(files)).encode()).hexdigest()
    if key not in _sizes_cache:
        cc = shutil.which(os.environ.get("CC", "gcc"))
        if cc is None:
            raise ToolError("computing CMSIS-NN buffer sizes needs a host C compiler (gcc)")
        with tempfile.TemporaryDirectory(prefix="mcugen-cmsis-sizes-") as tmp:
            main = Path(tmp) / "sizes.c"
            main.write_text(source)
            exe = Path(tmp) / "sizes"
            cmd = [cc, "-std=c99", "-O1", f"-I{root / 'Include'}", "-o", str(exe), str(main),
                   *[str(root / "Source" / f) for f in files]]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["?"])[0]
                raise ToolError(f"compiling CMSIS-NN's buffer size functions failed: {first}")
            run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                raise ToolError(f"CMSIS-NN's buffer size functions failed (status {run.returncode})")
            _sizes_cache[key] = [int(x) for x in run.stdout.split()]
    values = _sizes_cache[key]
    if len(values) != len(queried):
        raise ToolError("CMSIS-NN's buffer size helper printed an unexpected number of values")
    sizes = {pl.index: 0 for pl in plans}
    for pl, size in zip(queried, values):
        if size < 0:
            raise ToolError(f"CMSIS-NN returned a negative buffer size for layer {pl.index}")
        sizes[pl.index] = size
    return sizes


# ---- the pass ---------------------------------------------------------------------------------


def to_cmsis_nn(program: Program, target: Target, root: Optional[str | os.PathLike] = None) -> KernelPassResult:
    """Replace every layer CMSIS-NN covers by a CMSIS-NN call; see the module docstring.
    `root`: the checkout (None: $CMSIS_NN_PATH)."""
    root = cmsis_nn_path(root)
    lw = _Lowering(program, target)
    plans: list[CmsisPlan] = []
    for layer in program.layers:
        method = _DISPATCH.get(layer.kernel or "")
        plan = getattr(lw, method)(layer) if method else None
        if plan is not None:
            plans.append(plan)
    sizes = buffer_sizes(root, plans)
    copies: dict[int, tuple[tuple[int, int], ...]] = {}
    copy_bytes: dict[int, int] = {}
    for pl in plans:
        at, made = 0, []
        for k in pl.overlapping_inputs:
            made.append((k, at))
            at += -(-pl.arg_bytes[k] // 16) * 16
        copies[pl.index], copy_bytes[pl.index] = tuple(made), at
    needs = [
        ScratchBuffer(f"scratch{pl.index}", copy_bytes[pl.index] + sizes[pl.index], pl.index)
        for pl in plans if copy_bytes[pl.index] + sizes[pl.index] > 0
    ]
    program, offsets = place_scratch(program, needs)
    plans = [
        dataclasses.replace(pl, scratch_offset=offsets.get(f"scratch{pl.index}", -1), scratch_bytes=sizes[pl.index],
                            copies=copies[pl.index], copy_bytes=copy_bytes[pl.index])
        for pl in plans
    ]
    by_index = {pl.index: pl for pl in plans}
    layers: list[Layer] = []
    for layer in program.layers:
        pl = by_index.get(layer.index)
        if pl is None:
            layers.append(layer)
            continue
        args = list(pl.arena_args)
        args.append(ArenaArg(offset=pl.scratch_offset, ctype="int8_t", const=False) if pl.scratch_bytes + pl.copy_bytes else NullArg())
        layers.append(dataclasses.replace(layer, kernel=pl.name, kernel_group=None, params_type=None, params=[], args=args))
    consts = list(program.consts) + lw.new_consts
    program = dataclasses.replace(
        program, layers=layers, consts=consts,
        kernel_groups=sorted({l.kernel_group for l in layers if l.kernel_group}),
    )
    called = {pl.function for pl in plans} | set(_EXTRA_FUNCTIONS)
    index = source_index(root)
    missing = sorted(f for f in called if f not in index.defines)
    if missing:
        raise ToolError(f"{root}: this CMSIS-NN version has no {', '.join(missing)}")
    sources = index.closure(called)
    files = _render(program, plans, target, sources) if plans else {}
    return KernelPassResult(
        program=program,
        files=files,
        scratch=needs,
        cflags=(f"-I{root / 'Include'}", f"-I{root / 'Source'}"),
        choices={pl.index: pl.function for pl in plans},
        plans=by_index,
    )


def _render(program: Program, plans: list[CmsisPlan], target: Target, sources: list[str]) -> dict[str, str]:
    from mcugen import __version__, codegen

    env = codegen.environment()
    consts = {c.cname: c for c in program.consts}
    ctx = dict(p=program, plans=plans, target=target, version=__version__, consts=consts)
    files = {
        f"{program.name}_cmsis_nn.h": env.get_template("c/cmsis_nn/layers.h.j2").render(ctx),
        f"{program.name}_cmsis_nn.c": env.get_template("c/cmsis_nn/layers.c.j2").render(ctx),
        "mcugen_kernels.h": env.get_template("c/cmsis_nn/kernels.h.j2").render(ctx),
    }
    src = env.get_template("c/cmsis_nn/source.c.j2")
    for rel in sources:
        files[source_wrapper_name(rel)] = src.render(rel=rel, version=__version__)
    return files
