"""The applications around the serving core: `replay` feeds the input topic; `tail`, `alerts` and
`dashboard` read what serve publishes. Each depends only on `stream.core`, `ops` and `schemas`
(never on serve's shell or on another app), so each can be run, tested and replaced on its own;
`tests/unit/test_dashboard.py` enforces it."""
