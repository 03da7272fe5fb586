"""``python -m obsqc`` is the ``obsqc`` command."""

from obsqc.cli import main

main()
