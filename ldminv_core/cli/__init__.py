"""The command line ``python -m ldminv_core``: :mod:`.parser` (the options), :mod:`.main` (the
entry point), :mod:`.analyze_command` and :mod:`.report_command` (the subcommands).

Import the submodules themselves; this package imports none of them (``--help`` stays light).
"""
