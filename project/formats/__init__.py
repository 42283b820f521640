"""Date and time formats of the admin (FORMAT_MODULE_PATH): times with seconds,
in ISO order, where Django's English default shows "Nov. 29, 2026, 7:05 a.m."."""
