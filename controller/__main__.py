"""``python -m controller`` is the ``dataops`` command."""

from controller.cli import main

main()
