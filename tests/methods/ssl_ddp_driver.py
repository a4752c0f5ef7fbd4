"""Run several ``lightning-ssl fit`` commands in one DDP job (used by test_method_ddp.py).

usage: python ssl_ddp_driver.py CONFIG.yaml [CONFIG.yaml ...] -- [extra CLI arguments for every run]

Each config goes through the real CLI entry point (``lightning_ssl.cli.main(["fit", "--config", ...])``).
With ``--trainer.strategy=ddp`` Lightning's launcher re-runs *this script* (same argv) for rank 1 on the
first fit; rank 0 then carries ``LOCAL_RANK`` in its environment, so later fits in the same process join
the existing process group instead of launching again. Both ranks run every config in order. Paying the
interpreter and import start-up once for all methods is what makes this cheaper than one CLI call each.
"""

from __future__ import annotations

import sys

from lightning_ssl.cli import main


def run(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        configs, extra = argv[:i], argv[i + 1:]
    else:
        configs, extra = argv, []
    if not configs:
        print(__doc__)
        return 2
    for cfg in configs:
        rc = main(["fit", "--config", cfg, *extra])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
