"""The command line as a whole: every command documented, user mistakes are one line and exit code 2."""

from __future__ import annotations

import typer.main

from csvjobs import cli


def _commands() -> dict[str, object]:
    group = typer.main.get_command(cli.app)
    found = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found.update({f"{name} {sub}": c for sub, c in subcommands.items()})
        else:
            found[name] = command
    return found


def test_every_command_has_a_docstring_with_an_example() -> None:
    commands = _commands()
    assert {"upload", "work", "progress", "cleanup", "logs", "db status", "db migrate", "db stop", "batches",
            "workers", "retry", "cancel", "pause", "resume", "export", "template", "storage check"} <= set(commands)
    for name, command in commands.items():
        help_text = getattr(command, "help", "") or ""
        assert help_text.strip(), f"`csvjobs {name}` has no docstring"
        assert "Example:" in help_text, f"`csvjobs {name}` has no example in its docstring"


def test_help_lists_the_commands(run_cli) -> None:
    """Every command and group is listed in --help with the first line of its docstring, and every group's own
    --help lists its commands the same way."""
    import typer.main

    from csvjobs import cli

    def listed(group: typer.Typer, *path: str) -> None:
        result = run_cli(*path, "--help")
        assert result.code == 0, result.stderr
        text = " ".join(result.stdout.split())
        for command in group.registered_commands:
            name = command.name or typer.main.get_command_name(command.callback.__name__)  # type: ignore[union-attr]
            summary = " ".join((command.callback.__doc__ or "").split(".")[0].split())  # type: ignore[union-attr]
            assert name in text and summary[:40] in text, (path, name, summary)
        for sub in group.registered_groups:
            assert sub.name in text and " ".join((sub.typer_instance.info.help or "").split())[:40] in text
            listed(sub.typer_instance, *path, sub.name)

    listed(cli.app)


def test_a_user_mistake_is_one_red_line_and_exit_2(run_cli) -> None:
    result = run_cli("progress", "not-a-uuid")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    result = run_cli("batches", "--status", "done")
    assert result.code == 2 and "not a batch status" in result.stderr
