"""Output folders: regeneration rewrites only mcugen's files, keeps the user's code, refuses
(exit 2, folder untouched) or backs up under --force, and removes stale outputs."""
from __future__ import annotations

from pathlib import Path

import pytest

from mcugen import outdir
from mcugen.cli import main as mcugen_main
from mcugen.errors import OutputError

ROOT = Path(__file__).parent
TINY = ROOT / "fixtures" / "tiny_model"
CONV = ROOT / "models" / "ops" / "conv2d_1x1_valid_s1_none.tflite"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, hidden ones included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = mcugen_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


# --- the helper itself ---------------------------------------------------------------------


def test_regeneration_rewrites_only_what_mcugen_owns(tmp_path):
    out = tmp_path / "out"
    outdir.write(out, {"a.c": "int a;\n", "sub/b.h": "/* b */\n", "old.c": "int old;\n"}, scratch=("build",))
    (out / "build").mkdir()
    (out / "build" / "old.elf").write_bytes(b"\x7fELF")
    (out / "mine.txt").write_text("the user's notes")
    result = outdir.write(out, {"a.c": "int a2;\n", "sub/b.h": "/* b */\n"}, scratch=("build",))
    assert result.removed == ["old.c"] and result.backup is None
    assert (out / "a.c").read_text() == "int a2;\n" and not (out / "old.c").exists()
    assert not (out / "build").exists()  # stale build outputs of the earlier output
    assert (out / "mine.txt").read_text() == "the user's notes"


def test_a_build_folder_mcugen_did_not_make_is_not_emptied_silently(tmp_path):
    out = tmp_path / "out"
    outdir.write(out, {"a.c": "int a;\n"})  # e.g. `generate`: no build folder of its own
    (out / "build").mkdir()
    (out / "build" / "mine.o").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"build/mine\.o"):
        outdir.write(out, {"a.c": "int a;\n"}, scratch=("build",))
    assert (out / "build" / "mine.o").read_bytes() == b"mine"


def test_an_edited_generated_file_is_refused_then_backed_up_with_force(tmp_path):
    out = tmp_path / "out"
    outdir.write(out, {"a.c": "int a;\n", "b.c": "int b;\n"})
    (out / "a.c").write_text("int a; /* my fix */\n")
    before = snapshot(out)
    with pytest.raises(OutputError, match=r"changed since mcugen wrote them: a\.c; nothing was written"):
        outdir.write(out, {"a.c": "int a_new;\n", "b.c": "int b_new;\n"})
    assert snapshot(out) == before
    # a file mcugen no longer writes is deleted only if unchanged: an edited one is refused too
    with pytest.raises(OutputError, match=r"a\.c"):
        outdir.write(out, {"b.c": "int b;\n"})
    assert snapshot(out) == before
    result = outdir.write(out, {"a.c": "int a_new;\n", "b.c": "int b_new;\n"}, force=True, quiet=True)
    assert (out / "a.c").read_text() == "int a_new;\n"
    assert result.backup is not None and result.backup.parent == out / outdir.BACKUP_DIR
    assert (result.backup / "a.c").read_text() == "int a; /* my fix */\n"
    assert not (result.backup / "b.c").exists()  # only what the user had changed


def test_user_code_sections_survive_and_edits_outside_them_are_refused(tmp_path):
    out = tmp_path / "out"
    template = "int main(void)\n{{\n    /* USER CODE BEGIN setup */\n    /* USER CODE END setup */\n    return {ret};\n}}\n"
    outdir.write(out, {"main.c": template.format(ret=0)})
    text = (out / "main.c").read_text().replace("    /* USER CODE END setup */", "    led_on();\n    /* USER CODE END setup */")
    (out / "main.c").write_text(text)
    result = outdir.write(out, {"main.c": template.format(ret=1)})  # the generated part changed
    assert (out / "main.c").read_text() == template.format(ret=1).replace(
        "    /* USER CODE END setup */", "    led_on();\n    /* USER CODE END setup */")
    assert result.kept_sections == ["main.c: setup"]
    (out / "main.c").write_text((out / "main.c").read_text().replace("return 1;", "return 7;"))
    with pytest.raises(OutputError, match=r"main\.c"):
        outdir.write(out, {"main.c": template.format(ret=2)})
    # a section the new version no longer has would lose code: refused as well
    (out / "main.c").write_text((out / "main.c").read_text().replace("return 7;", "return 1;"))
    with pytest.raises(OutputError, match=r"main\.c"):
        outdir.write(out, {"main.c": "int main(void) { return 0; }\n"})


def test_a_foreign_folder_is_refused_whole_and_force_writes_beside_the_users_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    (out / "a.c").write_text("my own a.c")
    before = snapshot(out)
    with pytest.raises(OutputError, match="folder holds files mcugen did not write"):
        outdir.write(out, {"a.c": "int a;\n"})
    assert snapshot(out) == before
    result = outdir.write(out, {"a.c": "int a;\n"}, force=True, quiet=True)
    assert (result.backup / "a.c").read_text() == "my own a.c"
    assert (out / "notes.txt").read_text() == "keep"
    outdir.write(out, {"b.c": "int b;\n"})  # now an mcugen folder: notes.txt stays the user's
    assert not (out / "a.c").exists() and (out / "notes.txt").read_text() == "keep"


def test_an_older_mcugen_output_is_not_overwritten_silently(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / outdir.MANIFEST).write_text("generated by mcugen; safe to delete\n")  # the marker of earlier versions
    (out / "m.c").write_text("int m; /* edited? */\n")
    with pytest.raises(OutputError, match=r"older mcugen that kept no hashes.*: m\.c"):
        outdir.write(out, {"m.c": "int m2;\n"})
    result = outdir.write(out, {"m.c": "int m2;\n"}, force=True, quiet=True)
    assert (result.backup / "m.c").read_text() == "int m; /* edited? */\n"
    outdir.write(out, {"m.c": "int m3;\n"})  # from now on the hashes are known


# --- the commands ------------------------------------------------------------------------------


@pytest.mark.qemu
def test_firmware_regeneration_keeps_the_application_code(tmp_path, capsys):
    pd = tmp_path / "pd"
    assert run(capsys, "firmware", TINY, "--board", "nrf52840", "-o", pd)[0] == 0
    main_c = pd / "main.c"
    assert "/* USER CODE BEGIN setup */" in main_c.read_text()
    main_c.write_text(main_c.read_text().replace(
        "    /* USER CODE END output */", "    my_application_uses(tiny_output(0));\n    /* USER CODE END output */"))
    main_c.write_text(main_c.read_text().replace(
        "/* USER CODE END globals */", "static void my_application_uses(void *p) { (void)p; }\n/* USER CODE END globals */"))
    (pd / "NOTES.md").write_text("my notes")
    assert run(capsys, "firmware", TINY, "--board", "nrf52840", "-o", pd)[0] == 0
    assert "my_application_uses(tiny_output(0));" in main_c.read_text()
    assert (pd / "NOTES.md").read_text() == "my notes"
    assert (pd / "build" / "tiny.elf").is_file()

    # an edit outside the USER CODE sections: refused, naming the file, nothing changed
    main_c.write_text(main_c.read_text().replace("int main(void)\n{", "int main(void)\n{\n    /* mine */"))
    before = snapshot(pd)
    code, err = run(capsys, "firmware", TINY, "--board", "nrf52840", "-o", pd)
    assert code == 2 and "main.c" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert snapshot(pd) == before

    # --force: replaced, with the edited version backed up (its path is printed)
    code, err = run(capsys, "firmware", TINY, "--board", "nrf52840", "-o", pd, "--force")
    assert code == 0
    backups = list((pd / ".mcugen-backup").glob("*/main.c"))
    assert len(backups) == 1 and "/* mine */" in backups[0].read_text()
    assert str(backups[0].parent) in err
    assert "/* mine */" not in main_c.read_text()
    assert "my_application_uses(tiny_output(0));" in main_c.read_text()  # the sections still came along


@pytest.mark.qemu
def test_firmware_for_another_model_leaves_no_stale_outputs(tmp_path, capsys):
    pd = tmp_path / "pd"
    assert run(capsys, "firmware", TINY, "--board", "nrf52840", "-o", pd)[0] == 0
    assert (pd / "build" / "tiny.hex").is_file() and (pd / "model" / "tiny.c").is_file()
    assert run(capsys, "firmware", CONV, "--board", "nrf52840", "-o", pd, "--name", "conv")[0] == 0
    names = set(snapshot(pd))
    assert not [n for n in names if "tiny" in n], sorted(names)
    assert {"build/conv.elf", "build/conv.hex", "build/conv.map", "model/conv.c", "model/conv.h"} <= names


@pytest.mark.qemu
@pytest.mark.parametrize("command", ["generate", "firmware", "bench"])
def test_a_refused_output_folder_is_left_exactly_as_it_was(command, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(folder)
    board = ["--board", "qemu-mps2-an386"] if command != "generate" else []
    code, err = run(capsys, command, CONV, *board, "-o", folder)
    assert code == 2 and "notes.txt" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing beside it either
    # --force writes beside the user's files (bench takes it too) and keeps them
    assert run(capsys, command, CONV, *board, "-o", folder, "--force")[0] == 0
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sub" / "data.bin").read_bytes() == b"\x00\x01"
