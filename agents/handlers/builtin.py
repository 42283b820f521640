"""The handlers that ship with Meridian: load this module like any other
(`run_agent --handlers agents.handlers.builtin,mypkg.tasks`); an agent given no
handler module loads it by default."""
from agents.handlers import data_ingestion, echo, fail, file_processing, sleep  # noqa: F401  (they register)
