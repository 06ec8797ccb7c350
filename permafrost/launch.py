"""The `permafrost` command's entry point: wal-push's fast path first, then the command line.

archive_command runs `permafrost wal-push` once per segment, so its start-up is paid per
segment. When a look-ahead pusher already stored the segment (permafrost/wal/quick.py), this
answers with nothing imported but the standard library; everything else goes to permafrost.cli.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from permafrost.wal import quick

    if quick.try_fast(sys.argv[1:], os.environ):
        return 0
    from permafrost.cli import main as full

    return full()
