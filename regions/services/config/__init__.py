"""GitOps configuration: parse (validate and merge the repository's files), sync
(fetch a commit and apply it), current (the active configuration every process
reads)."""
