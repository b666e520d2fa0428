"""The desktop UI: tray icon, model manager window, VRAM gauge, settings.

Knows only ``core``, ``config`` and the bridge (:mod:`ryx_desktop.ui.bridge`): snapshots flow
up through the bridge's signals, commands go down through its coroutines.
"""
