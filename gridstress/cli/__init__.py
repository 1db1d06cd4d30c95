"""The ``gridstress`` command line: parses options, calls the library, prints.

Exit status: 0 on success, 2 on bad input (config, portfolio, options, an
output path that cannot be written), 1 on any other failure, 130 when
interrupted (finished blocks are kept).  :func:`main` is the one place that
turns errors into a line on stderr and an exit status: commands raise
:class:`~gridstress.errors.InputError` and the rest.

The commands live in the modules of this package, one per group
(:data:`COMMANDS` says which), and are loaded lazily: ``gridstress --help``
lists them from :data:`COMMANDS` alone, and ``gridstress CMD`` imports only
CMD's module.  Nothing heavier than typer and rich is imported until a
command runs, so ``gridstress --help`` starts fast.  :mod:`.options` declares
the options several commands share; :mod:`.display` prints.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import NamedTuple

import typer
from typer._click import Command as ClickCommand  # typer's own copy of click
from typer._click import Context as ClickContext
from typer._click import HelpFormatter
from typer._click import exceptions as usage  # typer's own copy of click's exceptions
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command as click_command

from ..errors import ClusterError, InputError, ModelError, did_you_mean
from ..heap import keep_freed_memory
from ..terminal import guard_pipes
from .display import err, out

#: Environment variable that makes an internal error print its traceback.
DEBUG_ENV = "GRIDSTRESS_DEBUG"


class Entry(NamedTuple):
    """Where a command is defined, and its help."""

    #: Module of this package that defines the command, as a function named
    #: after the command.
    module: str
    #: The command's help: its line in ``gridstress --help`` (the first
    #: sentence, cut to the window) and the text of ``gridstress CMD --help``.
    help: str


#: Every command, in the order ``gridstress --help`` lists them.  The only
#: place a command's help is written: its function has no docstring.
COMMANDS: dict[str, Entry] = {
    "run": Entry("run", "Evaluate the portfolio on every cell of the grid and write the cube."),
    "validate": Entry("run", "Check a config and its portfolio without computing anything."),
    "summary": Entry(
        "tables",
        "Headline figures of a cube: base and severe scenarios, triggers, the cost of the "
        "thin resale market, each loan's outcome, segments and spreads, the most "
        "underpriced loan.",
    ),
    "frontier": Entry(
        "tables",
        "Smallest deflation at which --var exceeds --threshold (or --loan defaults), per "
        "crypto drawdown and haircut.",
    ),
    "compare": Entry(
        "tables",
        "Headline deltas of two cubes on the same grid, and where B differs from A most.",
    ),
    "reverse": Entry(
        "risk", "Least severe and most probable cells whose loss rate reaches --loss-rate."
    ),
    "risk": Entry(
        "risk",
        "Expected loss, VaR and ES at 95% and 99% of the loss rate under scenario weights.",
    ),
    "price": Entry(
        "price",
        "What each loan should pay: expected loss and the cost of the capital it uses "
        "(its share of the book's expected shortfall) against the spread it carries.",
    ),
    "plot": Entry(
        "figures",
        "Heatmap of a variable over two axes, with the deflation frontier drawn over it.",
    ),
    "report": Entry(
        "figures",
        "One self-contained HTML report: summary, loans, triggers, market, figures, "
        "frontier, reverse stress, risk, what each loan should pay.",
    ),
    "trace": Entry(
        "trace",
        "Show each loan's path period by period in one scenario cell, with the market.",
    ),
    "bench": Entry(
        "bench",
        "Time the NumPy backend, the xp model on CuPy and the fused kernel on one grid.",
    ),
}


def load_command(name: str) -> ClickCommand:
    """The command ``name``: its module imported, its function made a click
    command with the help of :data:`COMMANDS`."""
    entry = COMMANDS[name]
    function = getattr(importlib.import_module(f"{__name__}.{entry.module}"), name)
    # Built as the one command of a Typer of the app's settings, so that it
    # parses and prints exactly as a command registered on the app would.
    one = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    one.command(name=name, help=entry.help)(function)
    return click_command(one)


class _Commands(TyperGroup):
    """The command group: commands loaded from :data:`COMMANDS` when first
    used, the nearest suggested for a misspelt one."""

    def list_commands(self, ctx: ClickContext) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: ClickContext, cmd_name: str) -> ClickCommand | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: ClickContext, formatter: HelpFormatter) -> None:
        # The listing needs only each command's help: stand-ins that carry it
        # keep the command modules unimported, and typer lays them out as usual.
        stand_ins: dict[str, ClickCommand] = {
            name: TyperCommand(name, help=e.help, rich_markup_mode=None)
            for name, e in COMMANDS.items()
        }
        TyperGroup(commands=stand_ins).format_commands(ctx, formatter)

    def resolve_command(self, ctx: ClickContext, args: list[str]):
        name = args[0] if args else ""
        if args and name not in COMMANDS and not name.startswith("-"):
            hint = did_you_mean(name, COMMANDS).replace(" (", "; ").rstrip(")")
            raise usage.UsageError(
                f"no such command {name!r}{hint} (commands: " + ", ".join(sorted(COMMANDS)) + ")",
                ctx,
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: ClickContext):
        # Typer turns a KeyboardInterrupt into a silent exit status; main says it.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted(interrupt_status(exc)) from None


class Interrupted(Exception):
    """A command stopped by Ctrl-C or SIGTERM, with the exit status to report."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


app = typer.Typer(
    help="Credit stress grids for loans against GPU fleets.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..model import MODEL_VERSION

        out.print(f"gridstress {__version__} (model v{MODEL_VERSION})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """Credit stress grids for loans against GPU fleets."""


# -- The one error boundary ------------------------------------------------


def _fail(lines: list[str], status: int) -> int:
    for line in lines:
        err.print(f"error: {line}")
    return status


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's cancel or time limit), handled as a Ctrl-C is."""


def _terminate(signum, frame) -> None:
    raise Terminated


def say_interrupted(line: str) -> None:
    """The one line of an interrupted command, written past the console, whose
    buffer a Ctrl-C in the middle of a print can leave holding its output."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def interrupt_status(exc: BaseException) -> int:
    """128 plus the number of the signal that stopped the run, as shells report it."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes a line on stderr and an exit status."""
    guard_pipes()
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    keep_freed_memory()
    out.reset()
    err.reset()
    try:
        status = app(args=argv, prog_name="gridstress", standalone_mode=False)
        status = status if isinstance(status, int) else 0
    except typer.Exit as exc:
        status = exc.exit_code
    except Interrupted as exc:
        say_interrupted("interrupted")
        status = exc.status
    except usage.NoArgsIsHelpError as exc:
        out.print(exc.ctx.get_help() if exc.ctx is not None else "")
        status = 2
    except usage.UsageError as exc:
        hint = (
            f" (gridstress {exc.ctx.command_path.partition(' ')[2]} -h for help)".replace("  ", " ")
            if exc.ctx is not None and " " in exc.ctx.command_path
            else " (gridstress -h for help)"
        )
        status = _fail([exc.format_message() + hint], 2)
    except usage.ClickException as exc:
        status = _fail([exc.format_message()], 2)
    except InputError as exc:
        status = _fail(exc.problems, 2)
    except (ModelError, ClusterError) as exc:
        status = _fail([str(exc)], 1)
    except (typer.Abort, KeyboardInterrupt) as exc:
        say_interrupted("interrupted")
        status = interrupt_status(exc)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        status = _fail([f"{where}{exc.strerror or exc}"], 2)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        status = _fail(
            [
                f"internal error ({type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 "
                "to see the traceback"
            ],
            1,
        )
    sys.stdout.flush()
    sys.exit(status)
