"""The command line's package: commands are listed without being imported,
each command's help is written once, and ``CMD`` imports only CMD's module."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import pytest
import typer
from typer._click import Context, HelpFormatter
from typer.core import TyperGroup

from gridstress.cli import COMMANDS, app, load_command

MODULES = sorted({f"gridstress.cli.{entry.module}" for entry in COMMANDS.values()})


def listing(commands: TyperGroup, width: int) -> str:
    """The Commands section that ``commands`` prints in a window ``width`` wide."""
    formatter = HelpFormatter(width=width)
    commands.format_commands(Context(commands, info_name="gridstress"), formatter)
    return formatter.getvalue()


def test_help_lists_every_command_with_its_help_line(cli):
    res = cli("--help")
    assert res.returncode == 0, res.stderr
    section = res.stdout.partition("Commands:\n")[2]
    rows = [line.split(None, 1) for line in section.splitlines() if line.strip()]
    assert [name for name, _ in rows] == list(COMMANDS)
    for name, line in rows:
        shown = line.removesuffix("...")
        assert shown and COMMANDS[name].help.startswith(shown), (name, line)


@pytest.mark.parametrize("width", [50, 78, 200])
def test_the_listing_is_what_the_loaded_commands_say(width):
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    loaded = TyperGroup(commands={name: load_command(name) for name in COMMANDS})
    assert listing(group, width) == listing(loaded, width)
    for name, entry in COMMANDS.items():
        assert load_command(name).help == entry.help


def test_each_command_function_is_registered_and_has_no_help_of_its_own():
    """A command's help is written once, in COMMANDS: a function of a command
    module that takes typer parameters is a registered command without a docstring."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        commands = {
            name
            for name, function in vars(module).items()
            if inspect.isfunction(function)
            and function.__module__ == module_name
            and any(
                isinstance(p.default, typer.models.ParameterInfo)
                for p in inspect.signature(function).parameters.values()
            )
        }
        registered = {n for n, e in COMMANDS.items() if f"gridstress.cli.{e.module}" == module_name}
        assert commands == registered, module_name
        for name in commands:
            assert getattr(module, name).__doc__ is None, f"{name}: its help is in COMMANDS"


def loaded_modules(*args: str) -> list[str]:
    """The command modules that ``gridstress ARGS`` imports, in a fresh process."""
    code = (
        "import json, sys\n"
        "from gridstress.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"sys.__stderr__.write(json.dumps(sorted(m for m in {MODULES!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.splitlines()[-1])


def test_help_imports_no_command_module():
    assert loaded_modules("--help") == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_imports_only_its_own_module(name):
    assert loaded_modules(name, "--help") == [f"gridstress.cli.{COMMANDS[name].module}"]
