"""The campaign loop and what steers it: operator control, stop rules, resume after a crash.

``Campaign`` sequences one step (snapshot, propose, record the decision, measure, record,
hand the data to the trainer, check the stop rules); it sees its collaborators only through the
protocols of ``engine.protocols``. Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import numpy as np
    >>> from engine.clock import SystemClock
    >>> from engine.storage import read_run
    >>> run = read_run(run_path)  # a closed run of 20 spectra
"""

from engine.campaign._drift import DriftEstimate, DriftTracker
from engine.campaign._loop import FAULTS, Campaign, CampaignResult, StepReport
from engine.campaign._operator import APPROVAL_FALLBACKS, OperatorAction, OperatorControl, Verdict
from engine.campaign._resume import (
    LOST_POLICY,
    LostSteps,
    Reconciliation,
    ResumePlan,
    apply_plan,
    fetch_lost_steps,
    plan_resume,
    reconcile,
)
from engine.campaign._stop_rules import Budget, OperatorStop, WallTime

__all__ = [
    # the loop
    "Campaign",
    "CampaignResult",
    "StepReport",
    "FAULTS",
    # stop rules
    "Budget",
    "WallTime",
    "OperatorStop",
    # operator control
    "OperatorControl",
    "OperatorAction",
    "Verdict",
    "APPROVAL_FALLBACKS",
    # drift tracking
    "DriftTracker",
    "DriftEstimate",
    # resume after a crash
    "ResumePlan",
    "plan_resume",
    "apply_plan",
    "Reconciliation",
    "reconcile",
    "LostSteps",
    "fetch_lost_steps",
    "LOST_POLICY",
]
