"""Cycle estimates: the per-instruction-class timing tables of the Cortex-M4 and Cortex-M7.

QEMU counts instructions, not cycles. `mcugen bench` also estimates cycles: the counting
plugin (firmware/qemu_plugin/mcugen_icount.c) classifies every instruction it translates
from QEMU's disassembly and charges it the cycles of its class from one of the tables
below, which this module passes to the plugin (`timing=` argument). The classifier lives
only in the plugin; `classify` and `instruction_cycles` call it through ctypes.

Model (per executed instruction, zero wait states):
  class cost, except
  - multiple (LDM/STM/PUSH/POP/VLDM/VSTM/VPUSH/VPOP): multiple + ceil(words / regs_per_cycle),
    a D register counting as two words;
  - single load/store directly after another single load/store: load_store_pipelined;
  - writing PC (branches, BL/BX, POP/LDM/LDR of PC, TBB/TBH, MOV/ADD PC): + branch_refill,
    for a conditional one (B<cond>, CBZ/CBNZ, in an IT block) only when taken, i.e. when
    the next executed block does not start at the fall-through address.
Left out: flash wait states and the caches/accelerators that hide them, bus contention
and DMA, the M7's dual issue, branch prediction and load-use stalls, the M4's single-cycle
STR with immediate offset and folded IT, and instructions of an IT block whose condition
fails (charged as executed).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

# The plugin's timing fields, in the order of its TIMING_FIELDS (a test checks they match).
# The first ones up to "unclassified" are instruction classes.
TIMING_FIELDS = (
    "alu", "mul", "mla", "div", "load_store", "load_store_pair", "multiple", "branch",
    "fp", "fp_mac", "fp_div", "fp_load_store", "fp_load_store_pair", "system", "it",
    "unclassified", "load_store_pipelined", "regs_per_cycle", "branch_refill",
)
CLASSES = TIMING_FIELDS[: TIMING_FIELDS.index("unclassified") + 1]


@dataclass(frozen=True)
class Timing:
    """Cycles per instruction class (and the three rule parameters) of one core."""

    core: str
    source: str  # where the numbers come from
    cycles: Mapping[str, int]

    def plugin_argument(self) -> str:
        """The plugin's `timing=` value: the fields' cycles, ':'-separated, in plugin order."""
        return "timing=" + ":".join(str(self.cycles[name]) for name in TIMING_FIELDS)

    def vector(self) -> "ctypes.Array[ctypes.c_int]":
        return (ctypes.c_int * len(TIMING_FIELDS))(*(self.cycles[name] for name in TIMING_FIELDS))


def _timing(core: str, source: str, **cycles: int) -> Timing:
    missing = set(TIMING_FIELDS) ^ set(cycles)
    if missing:
        raise ValueError(f"timing table of {core}: fields {sorted(missing)} missing or unknown")
    return Timing(core, source, MappingProxyType(dict(cycles)))


# THE timing tables (the README cites them; the plugin receives them at run time).
TIMINGS: dict[str, Timing] = {
    "cortex-m4": _timing(
        "cortex-m4",
        "Cortex-M4 TRM instruction timing, zero wait states, pipeline refill P = 2",
        alu=1,                  # data processing, shifts, extends, SSAT/USAT, SEL, PKH, SIMD add/sub
        mul=1,                  # MUL, long multiplies, SMLAxy, SMLAD, SMLALD, SMMLA, USADA8
        mla=2,                  # MLA, MLS
        div=7,                  # SDIV/UDIV: 2-12 (early termination), the middle value
        load_store=2,           # LDR/LDRB/LDRH/LDRSB/LDRSH/STR/STRB/STRH/LDREX/STREX, TBB/TBH (+P)
        load_store_pipelined=1,  # ... directly after another single load/store
        load_store_pair=3,      # LDRD/STRD: 1 + 2
        multiple=1,             # LDM/STM/PUSH/POP: 1 + N (+P when loading PC)
        regs_per_cycle=1,
        branch=1,               # B/BL/BX/BLX/CBZ/CBNZ: 1 + P when taken
        branch_refill=2,        # P, the pipeline refill of a taken branch (TRM: 1-3)
        fp=1,                   # VADD/VSUB/VMUL/VABS/VNEG/VCMP/VCVT/VMOV/VMRS
        fp_mac=3,               # VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS/VFNMA/VFNMS
        fp_div=14,              # VDIV/VSQRT
        fp_load_store=2,        # VLDR/VSTR of an S register
        fp_load_store_pair=3,   # VLDR/VSTR of a D register
        system=2,               # MRS/MSR/CPS/barriers/SVC/BKPT/WFI (1-2, barriers 1+B)
        it=1,                   # IT (the TRM folds some: 0)
        unclassified=1,         # instructions the classifier does not know (reported)
    ),
    "cortex-m7": _timing(
        "cortex-m7",
        "simple single-issue Cortex-M7 table: TCM/cache-hit memory, 64-bit load/store path, "
        "correctly predicted branches; dual issue not modelled",
        alu=1,
        mul=1,                  # fully pipelined MAC
        mla=1,
        div=7,                  # SDIV/UDIV: data-dependent, the middle value as on the M4
        load_store=1,           # pipelined LSU: 1 issue cycle (load-use latency not modelled)
        load_store_pipelined=1,
        load_store_pair=1,      # LDRD/STRD: one 64-bit access
        multiple=1,             # LDM/STM/PUSH/POP: 1 + N/2 (two registers per 64-bit beat)
        regs_per_cycle=2,
        branch=1,
        branch_refill=1,        # taken branch 2 (predicted); mispredictions not modelled
        fp=1,
        fp_mac=3,
        fp_div=14,              # single precision (double precision is slower)
        fp_load_store=1,
        fp_load_store_pair=1,
        system=2,
        it=1,
        unclassified=1,
    ),
}


def timing_for_cpu(cpu: str) -> Timing | None:
    """The timing table of a board's `cpu` ("cortex-m4", ...), or None (no estimate)."""
    return TIMINGS.get(cpu)


# --- the plugin's classifier, through ctypes ---------------------------------------------------


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    from mcugen.bench import build_icount_plugin

    library = ctypes.CDLL(str(build_icount_plugin()))
    library.mcugen_classify.restype = ctypes.c_int
    library.mcugen_classify.argtypes = [ctypes.c_char_p] + [ctypes.POINTER(ctypes.c_int)] * 3
    library.mcugen_insn_cycles.restype = ctypes.c_int
    library.mcugen_insn_cycles.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int]
    return library


def plugin_timing_fields() -> tuple[str, ...]:
    """The timing field names compiled into the plugin, in its order."""
    first = ctypes.c_char.in_dll(_library(), "mcugen_timing_fields")
    return tuple(ctypes.cast(ctypes.addressof(first), ctypes.c_char_p).value.decode().split())


@dataclass(frozen=True)
class Classified:
    cls: str
    words: int  # register words moved by a multiple load/store
    writes_pc: bool
    conditional: bool


def classify(disassembly: str) -> Classified:
    """The plugin's class of one instruction, from QEMU's disassembly text ("ldr r0, [r1]")."""
    words, writes_pc, conditional = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    index = _library().mcugen_classify(disassembly.encode(), ctypes.byref(words), ctypes.byref(writes_pc),
                                       ctypes.byref(conditional))
    return Classified(TIMING_FIELDS[index], words.value, bool(writes_pc.value), bool(conditional.value))


def instruction_cycles(disassembly: str, core: str = "cortex-m4", *, after_load_store: bool = False,
                       taken: bool = True) -> int:
    """The plugin's cycles for one instruction on `core`."""
    return _library().mcugen_insn_cycles(disassembly.encode(), TIMINGS[core].vector(), int(after_load_store), int(taken))
