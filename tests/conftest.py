"""Every test session keeps its conversations (the chat's SQLite store) in a folder of its own.

``RYX_DATA_DIR`` is set before any test runs, so that the desktop, ``serve`` started as a
subprocess and anything else reading the environment never write to the user's data folder;
the folder is removed when the session ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "RYX_DATA_DIR" not in os.environ:
    _folder = tempfile.mkdtemp(prefix="ryx-test-data-")
    os.environ["RYX_DATA_DIR"] = _folder
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)
