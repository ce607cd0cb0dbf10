"""The README stays true: quick start commands, the supported-ops table, every CLI command."""

from helpers import REPO
from mcugen.cli import build_parser
from mcugen.supported import supported_ops_markdown


def test_supported_ops_table_in_sync():
    table = supported_ops_markdown()
    assert all(line.startswith("|") for line in table.strip().splitlines()), "a constraint docstring spans lines"
    readme = (REPO / "README.md").read_text()
    assert table in readme and readme.count("| operator | constraints |") == 1


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


def test_every_command_example_in_the_readme_parses():
    """The examples in the Commands table are accepted by the parser as they are written."""
    import re
    import shlex

    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    examples = re.findall(r"^\| `[a-z]+` \| `mcugen ([^`]+)` \|", readme, re.M)
    assert len(examples) >= 15
    for example in examples:
        try:
            parser.parse_args(shlex.split(example))
        except SystemExit:
            raise AssertionError(f"the README's example `mcugen {example}` does not parse") from None
