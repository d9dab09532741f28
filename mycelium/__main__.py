"""``python -m mycelium`` is the same CLI as the ``mycelium`` console script."""

from mycelium.cli import main

main()
