"""Graph pass and lowering of --stream-inputs: a model input read only by a QUANTIZE is quantized as the application writes it, in pieces, so the unquantized input never occupies the arena."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from mcugen.ir import DType, Graph, Operator, OpType
from mcugen.lower import Program, TensorPlacement, c_comment_text
from mcugen.lower_io import quantize_call

# What a streamed input's writer accepts and what it writes into the arena.
SOURCE_TYPES = (DType.FLOAT32, DType.UINT8, DType.INT8)
TARGET_TYPES = (DType.INT8, DType.UINT8, DType.INT16)  # int16: from float32 only (16x8 models)


@dataclass(frozen=True)
class StreamedInput:
    """Model input `position` (tensor `source`) whose only reader, the QUANTIZE `op`, now runs
    in <name>_input_write(); the arena holds only its output, tensor `target`."""

    position: int
    source: int
    target: int
    op: Operator


@dataclass(frozen=True)
class InputWriter:
    """One case of <name>_input_write(): the quantize kernel for `elements` elements of
    `src_ctype` written at arena `offset` (element i to offset + i), its parameters, and
    `row_elements`, the piece the test harnesses write at a time (one row of the tensor)."""

    position: int
    kernel: str
    group: str  # the kernel group that holds `kernel` in mcugen_kernels.c
    params_type: Optional[str]
    params: list
    in_unsigned: int
    out_unsigned: int
    src_ctype: str
    src_itemsize: int
    elements: int
    offset: int
    row_elements: int


def streamable_inputs(graph: Graph) -> tuple[StreamedInput, ...]:
    """The model inputs that --stream-inputs can stream: read by one QUANTIZE (float32, uint8 or
    int8 to int8 or uint8) and by nothing else, neither of them a model output."""
    found = []
    for position, index in enumerate(graph.inputs):
        if index in graph.outputs or graph.t(index).dtype not in SOURCE_TYPES:
            continue
        readers = [op for op in graph.operators if index in op.inputs]
        if len(readers) != 1 or readers[0].op is not OpType.QUANTIZE:
            continue
        op = readers[0]
        target = op.outputs[0]
        if target in graph.outputs or target in graph.inputs or graph.t(target).dtype not in TARGET_TYPES:
            continue
        if graph.t(target).dtype is DType.INT16 and graph.t(index).dtype is not DType.FLOAT32:
            continue
        found.append(StreamedInput(position=position, source=index, target=target, op=op))
    return tuple(found)


def stream_inputs(graph: Graph) -> tuple[Graph, tuple[StreamedInput, ...]]:
    """The graph without the streamed inputs' QUANTIZE ops, their outputs as the model inputs."""
    streamed = streamable_inputs(graph)
    if not streamed:
        return graph, ()
    dropped = {id(s.op) for s in streamed}
    by_position = {s.position: s.target for s in streamed}
    return dataclasses.replace(
        graph,
        operators=[op for op in graph.operators if id(op) not in dropped],
        inputs=[by_position.get(k, index) for k, index in enumerate(graph.inputs)],
    ), streamed


def attach_writers(program: Program, source: Graph, streamed: tuple[StreamedInput, ...]) -> Program:
    """`program` with the streamed inputs described as the application sees them (the source
    tensor: its type, shape and bytes; offset -1, as it is not in the arena) and one
    InputWriter per streamed input."""
    if not streamed:
        return program
    inputs = list(program.inputs)
    writers = []
    for s in streamed:
        x, o = source.t(s.source), source.t(s.target)
        call = quantize_call(x, o)
        kernel, group = (("mcugen_quantize_f32_s16", "quantize_s16") if o.dtype is DType.INT16
                         else (call.kernel, "quantize"))
        placed = program.inputs[s.position]
        inputs[s.position] = TensorPlacement(index=s.source, name=c_comment_text(x.name, 60), shape=tuple(x.shape),
                                             dtype=x.dtype, offset=-1, nbytes=x.nbytes)
        rows = x.shape[-1] * (x.shape[-2] if len(x.shape) >= 2 else 1)
        writers.append(InputWriter(
            position=s.position, kernel=kernel, group=group, params_type=call.params_type, params=call.params,
            in_unsigned=call.in_unsigned, out_unsigned=call.out_unsigned, src_ctype=x.dtype.ctype,
            src_itemsize=x.dtype.itemsize, elements=x.size, offset=placed.offset, row_elements=max(int(rows), 1),
        ))
    groups = sorted(set(program.kernel_groups) | {w.group for w in writers})
    return dataclasses.replace(program, inputs=inputs, writers=writers, kernel_groups=groups)


def stream_notes(graph: Graph, streamed: tuple[StreamedInput, ...], program: Program) -> tuple[str, ...]:
    """With --stream-inputs: that the input QUANTIZE now runs outside <name>_invoke() (so counts
    of invoke leave it out); without: which float32 inputs the arena holds whole although they
    could be streamed."""
    if streamed:
        return tuple(
            f"note: --stream-inputs: input {s.position} ({graph.t(s.source).dtype.value}) is quantized in "
            f"{program.name}_input_write(), not in {program.name}_invoke(): measurements of invoke leave that out"
            for s in streamed
        )
    return tuple(
        f"note: input {s.position} is float32 and held whole in the arena ({graph.t(s.source).nbytes:,} bytes); "
        f"--stream-inputs quantizes it as the application writes it, in pieces, and leaves it out of the arena"
        for s in streamable_inputs(graph) if graph.t(s.source).dtype is DType.FLOAT32
    )
