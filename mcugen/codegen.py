"""Code generation: renders a lowered Program into C files with Jinja2 templates (formatting only)."""

from __future__ import annotations

from pathlib import Path
import jinja2
import numpy as np

from mcugen import __version__
from mcugen.ir import Graph
from mcugen.lower import ArenaArg, ConstArg, FlagArg, NullArg, ParamsArg, ParamValue, Program, SizeArg


def templates_dir() -> Path:
    """The templates folder: `templates/` in a checkout, `mcugen/templates` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here / "templates", here.parent / "templates"):
        if (cand / "c" / "model.c.j2").is_file():
            return cand
    raise FileNotFoundError("mcugen templates not found (expected templates/c/model.c.j2)")


def c_float(v: float) -> str:
    """An exact float32 literal: C99 hex float, e.g. 0x1.0p-8f."""
    return f"{float(np.float32(v)).hex()}f"


def c_double(v: float) -> str:
    return float(v).hex()


def c_param(p: ParamValue) -> str:
    if p.kind == "ints":
        return "{" + ", ".join(str(int(v)) for v in p.value) + "}"
    if p.kind == "float":
        return f"{c_float(p.value)} /* {float(p.value):.9g} */"
    if p.kind == "double":
        return f"{c_double(p.value)} /* {float(p.value):.17g} */"
    return str(int(p.value))


def c_arg(a, name: str, layer: int) -> str:
    if isinstance(a, ArenaArg):
        qual = "const " if a.const else ""
        return f"({qual}{a.ctype} *)({name}_arena + {a.offset})"
    if isinstance(a, ConstArg):
        return a.cname
    if isinstance(a, NullArg):
        return "NULL"
    if isinstance(a, ParamsArg):
        return f"&{name}_l{layer}_params"
    if isinstance(a, FlagArg):
        return f"/* {a.name} */ {int(a.value)}"
    if isinstance(a, SizeArg):
        return f"/* {a.name} */ {int(a.value)}u"
    raise TypeError(f"unknown argument {a!r}")


def c_rows(values: np.ndarray, per_row: int = 16) -> str:
    """Array initialiser rows; INT32_MIN is written as an expression to stay valid C."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    text = [str(v) if v != -(2**31) else "(-2147483647 - 1)" for v in flat.tolist()]
    rows = []
    for i in range(0, len(text), per_row):
        rows.append("    " + ", ".join(text[i : i + per_row]) + ",")
    return "\n".join(rows) if rows else "    0"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(c_float=c_float, c_param=c_param, c_arg=c_arg, c_rows=c_rows)
    return env


def quantize_f32_ranges(program: Program) -> set[tuple[int, int]]:
    """The (qmin, qmax) of every float32 QUANTIZE the model runs (layers and input writers):
    mcugen_quantize_f32 keeps the fast path of those only."""
    calls = [(l.kernel, l.params) for l in program.layers] + [(w.kernel, w.params) for w in program.writers]
    ranges = set()
    for kernel, params in calls:
        if kernel == "mcugen_quantize_f32":
            values = {p.name: p.value for p in params}
            ranges.add((int(values["qmin"]), int(values["qmax"])))
    return ranges


def render_model(program: Program, graph: Graph) -> dict[str, str]:
    """File name -> contents of the model library for `program`."""
    env = environment()
    io_quant = {}
    for t in program.inputs + program.outputs:
        q = graph.t(t.index).quant
        io_quant[t.index] = (q.s, q.zp) if q is not None else None
    ctx = dict(
        p=program,
        U=program.name.upper(),
        version=__version__,
        kernels=set(program.kernel_groups),
        quantize_f32_ranges=quantize_f32_ranges(program),
        io_quant=io_quant,
        macs=graph.macs(),
    )
    # Empty arrays are not valid C; the lowering never emits one, but keep the guard explicit.
    for c in program.consts:
        if c.values.size == 0:
            raise ValueError(f"constant {c.cname} is empty")
    return {
        f"{program.name}.h": env.get_template("c/model.h.j2").render(ctx),
        f"{program.name}.c": env.get_template("c/model.c.j2").render(ctx),
        f"{program.name}_weights.c": env.get_template("c/weights.c.j2").render(ctx),
        "mcugen_kernels.h": env.get_template("c/mcugen_kernels.h.j2").render(ctx),
        "mcugen_kernels.c": env.get_template("c/mcugen_kernels.c.j2").render(ctx),
    }


def render_host_main(program: Program) -> str:
    return environment().get_template("host/host_main.c.j2").render(p=program, version=__version__)


def write_files(files: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in sorted(files.items()):
        path = out_dir / name
        path.write_text(text)
        paths.append(path)
    return paths


def model_sources(files: dict[str, str]) -> list[str]:
    return sorted(n for n in files if n.endswith(".c"))

