"""The generated C API as a firmware project uses it: the README's main.c (arena supplied by the
application in a named section, shape and type macros in #if) built with -Wall -Wextra -Werror
for the Cortex-M4 by a second CMake project that links the generated library targets, run on
the emulated M4 and compared with the reference interpreter; header macros; the stack figure."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO
from mcugen.bench import read_elf
from mcugen.boards import get_board
from mcugen.cli import main as mcugen_main
from mcugen.qemu import run_on_qemu, run_on_qemu_batch

CONV = Path(__file__).parent / "models" / "ops" / "conv2d_1x1_valid_s1_none.tflite"

# Calls the README's main() (compiled as user_main) and hands its outputs to the test
# through semihosting files: the README's main.c itself stays exactly as printed.
HARNESS = r"""
#include <stdint.h>
#include "detector.h"
#include "mcugen_semihost.h"

int user_main(void);

static void save(const char *path, const void *data, unsigned bytes)
{
    const int handle = mcugen_sh_open(path, MCUGEN_SH_MODE_WRITE_BINARY);
    (void)mcugen_sh_write(handle, data, bytes);
    (void)mcugen_sh_close(handle);
}

int main(void)
{
    const int32_t best = user_main();
    save("run0_output0.bin", detector_output(0), DETECTOR_OUTPUT0_BYTES);
    save("run0_output1.bin", &best, sizeof best);
    mcugen_sh_print("MCUGEN_RUNS=1\n");
    return best < 0 ? 3 : 0;
}
"""


def readme_block(language: str) -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using the generated library", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.DOTALL).group(1)


def readme_input(shape) -> np.ndarray:
    """The image the README's capture() writes."""
    _, height, width, channels = shape
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    return ((y * 31 + x * 7 + c * 3) % 256 - 128).astype(np.int8).reshape(shape)


def reference_outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    from mcugen.oracle import oracles_for

    return oracles_for(model)[0].run([x])


@pytest.fixture(scope="module")
def firmware_project(tmp_path_factory):
    """`mcugen firmware` for the emulated M4, the model named "detector"."""
    root = tmp_path_factory.mktemp("c_api")
    assert mcugen_main(["firmware", str(CONV), "--board", "qemu-mps2-an386", "--name", "detector",
                        "-o", str(root / "fw")]) == 0
    return root / "fw"


def test_header_macros_are_integers_usable_in_preprocessor_conditions(firmware_project, tmp_path):
    probe = tmp_path / "probe.c"
    probe.write_text(
        '#include "detector.h"\n'
        "#if DETECTOR_INPUT0_TYPE != MCUGEN_TYPE_INT8 || DETECTOR_INPUT0_ZERO_POINT != 0\n#error type\n#endif\n"
        "#if DETECTOR_INPUT0_HEIGHT * DETECTOR_INPUT0_WIDTH * DETECTOR_INPUT0_CHANNELS != DETECTOR_INPUT0_ELEMENTS\n"
        "#error shape\n#endif\n"
        "#if DETECTOR_OUTPUT0_CHANNELS != DETECTOR_OUTPUT0_DIM3 || DETECTOR_OUTPUT0_NUM_DIMS != 4\n#error out\n#endif\n"
        "int shape[] = {DETECTOR_INPUT0_BATCH, DETECTOR_INPUT0_HEIGHT, DETECTOR_INPUT0_WIDTH, DETECTOR_INPUT0_CHANNELS,\n"
        "               DETECTOR_OUTPUT0_HEIGHT, DETECTOR_OUTPUT0_WIDTH, DETECTOR_OUTPUT0_CHANNELS, DETECTOR_OUTPUT0_ZERO_POINT};\n"
    )
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb",
                    "-I", str(firmware_project / "model"), "-c", str(probe), "-o", str(tmp_path / "probe.o")],
                   check=True, capture_output=True, text=True)
    from mcugen.tflite_reader import read_tflite

    graph = read_tflite(CONV)
    header = (firmware_project / "model" / "detector.h").read_text()
    shape_in, shape_out = graph.t(graph.inputs[0]).shape, graph.t(graph.outputs[0]).shape
    for kind, shape in (("INPUT0", shape_in), ("OUTPUT0", shape_out)):
        for macro, value in zip(("BATCH", "HEIGHT", "WIDTH", "CHANNELS"), shape):
            assert f"#define DETECTOR_{kind}_{macro} {value}\n" in header
    assert f"#define DETECTOR_OUTPUT0_ZERO_POINT ({graph.t(graph.outputs[0]).quant.zp})" in header


def test_arena_alignment_can_be_overridden_without_redefinition_errors(firmware_project, tmp_path):
    source = firmware_project / "model" / "detector.c"
    done = subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb",
                           "-DMCUGEN_ARENA_ALIGN=__attribute__((aligned(32),section(\".bss.dtcm\")))",
                           "-I", str(firmware_project / "model"), "-c", str(source), "-o", str(tmp_path / "d.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sections = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(tmp_path / "d.o")],
                              check=True, capture_output=True, text=True).stdout
    assert re.search(r"\.bss\.dtcm\s+NOBITS", sections), sections
    # host gcc too: an empty override, and the user-arena build (the arena is then only declared)
    for define in ("-DMCUGEN_ARENA_ALIGN=", "-DMCUGEN_USER_ARENA"):
        done = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", define, "-I", str(firmware_project / "model"),
                               "-c", str(source), "-o", str(tmp_path / "h.o")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    undefined = subprocess.run(["nm", "-u", str(tmp_path / "h.o")], check=True, capture_output=True, text=True).stdout
    assert "detector_arena" in undefined


@pytest.mark.qemu
def test_readme_main_links_the_generated_library_and_runs_bit_exact_on_the_m4(firmware_project, tmp_path):
    board = get_board("qemu-mps2-an386")
    app = tmp_path / "app"
    app.mkdir()
    shutil.copytree(firmware_project, app / "fw", ignore=shutil.ignore_patterns("build", "build-cmake"))
    (app / "main.c").write_text(readme_block("c"))
    (app / "harness.c").write_text(HARNESS)
    (app / "CMakeLists.txt").write_text(
        readme_block("cmake")
        + "# test only: the README's main() runs under a harness that saves its outputs\n"
          "target_sources(app PRIVATE harness.c)\n"
          "set_source_files_properties(main.c PROPERTIES COMPILE_DEFINITIONS main=user_main)\n"
    )
    build = tmp_path / "build"
    for command in (["cmake", "-S", str(app), "-B", str(build)], ["cmake", "--build", str(build), "-j2"]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    flags = (build / "CMakeFiles" / "app.dir" / "flags.make").read_text()
    for flag in ("-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-std=c99", "-DMCUGEN_USER_ARENA"):
        assert flag in flags, flags

    # the arena is the application's, in its named section, 16-byte aligned, in RAM
    main_object = build / "CMakeFiles" / "app.dir" / "main.c.obj"
    sections = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(main_object)],
                              check=True, capture_output=True, text=True).stdout
    assert re.search(r"\.bss\.detector_arena\s+NOBITS", sections), sections
    symbols = {s.name: s for s in read_elf(build / "app.elf").symbols}
    arena = symbols["detector_arena"]
    assert arena.value % 16 == 0 and board.ram.origin <= arena.value < board.ram.end
    model_object = next((build / "fw").rglob("detector.c.obj"))
    model_symbols = subprocess.run(["arm-none-eabi-nm", str(model_object)], check=True, capture_output=True,
                                   text=True).stdout
    assert re.search(r"\bU detector_arena\b", model_symbols)  # the library only refers to it

    graph_input = readme_input((1, 5, 6, 8))
    expected = reference_outputs(CONV, graph_input)[0]
    result = run_on_qemu_batch(build / "app.elf", board, [[]], timeout=60)
    assert result.exit_code == 0, result.stderr
    output, best = result.outputs[0]
    assert output == expected.tobytes()
    assert int.from_bytes(best, "little") == int(np.argmax(expected.reshape(-1)))

    # the generated project's own executable, built in the same tree with the user arena
    own = run_on_qemu(build / "fw" / "detector.elf", board, [graph_input.tobytes()], timeout=60)
    assert own.exit_code == 0 and own.outputs == [expected.tobytes()], own.stderr


@pytest.mark.qemu
def test_bench_writes_the_measured_stack_into_the_header(tmp_path, capsys):
    out = tmp_path / "bench"
    assert mcugen_main(["bench", str(CONV), "--board", "qemu-mps2-an386", "--name", "detector",
                        "-o", str(out), "--json"]) == 0
    import json

    record = json.loads(capsys.readouterr().out)
    header = (out / "model" / "detector.h").read_text()
    assert f"#define DETECTOR_STACK_BYTES {record['stack_bytes']} " in header and record["stack_bytes"] > 0
    # the header is still mcugen's: the same command runs again without refusing
    assert mcugen_main(["bench", str(CONV), "--board", "qemu-mps2-an386", "--name", "detector", "-o", str(out)]) == 0
