"""The README stays true: quick start commands, the supported-ops table, every CLI command."""

from helpers import REPO
from mcugen.cli import build_parser
from mcugen.supported import supported_ops_markdown


def test_supported_ops_table_in_sync():
    assert supported_ops_markdown() in (REPO / "README.md").read_text()


def test_every_cli_command_documented_with_example():
    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`mcugen {name} " in readme, f"README lacks an example of `mcugen {name}`"


def test_quick_start_commands_exist():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme and "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
