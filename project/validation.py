"""Name formats shared by both roles."""
CAPABILITY_RE = r"^[a-z][a-z0-9_]{0,63}$"
AGENT_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
LABEL_RE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
