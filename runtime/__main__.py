"""``python -m trioforge``: the same as the ``trioforge`` command."""

from trioforge._cli import main

main()
