"""The command line: the composition root, the only place that wires concrete parts together.

``main`` registers the commands and turns a user's mistake into exit 2; one module per command group
parses options, makes one library call and prints (``campaign_commands``: demo, run, resume, replay;
``serve_command``; ``simulate_commands``; ``data_commands``: import, explore, train; ``run_commands``:
inspect, report; ``ctl_command``, ``keys_command``, ``limits_command``, ``design_command``).
The wiring that needs ``instruments`` or ``simulators`` lives here too: ``wiring`` (instrument,
campaign and control socket of a run), ``resuming``, ``design`` (the inverse-design problem and its
executors), ``drivers`` (the driver registry), ``spawn`` (a server in its own process) and
``demo_truth``. ``console`` holds the two consoles and ``fail``.
"""
