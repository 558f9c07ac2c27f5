"""The ``icrt`` command line: ``app.py`` (the parser and the runner), ``options.py`` (the options commands share,
each declared once), ``command.py`` (the shape every command has) and ``commands/`` (one module per command).
``python -m icrt.runtime.cli`` is the runtime's commands alone (no ``train`` / ``export``)."""


def main(argv=None, more=()) -> int:
    """``icrt ARGV``: see :func:`icrt.runtime.cli.app.main`."""
    from icrt.runtime.cli.app import main as run

    return run(argv, more)
