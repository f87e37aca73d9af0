"""The linear member: a linear model learned beside the MLP, on the same micro-batches.

:class:`learnd.daemon.learning.learner.Learner` with ``model.kind: mlp`` and
``learning.linear_member.enabled`` holds a second, linear ``Learner`` (``model.kind: linear``,
the rest of the config alike). Each batch goes to both, test-then-train: each predicts it with
the weights it had before the batch, then learns it; rehearsal, drift reaction, adoption of a
challenger, guards and rollback reach both. :class:`learnd.daemon.learning.selection.MemberSelection`
picks the member that predicts and is exported; these functions are the learner's half that
deals with the member (the learner imports them, so they do not import it back).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Learner = Any
# What a step saw: (outputs, errors, loss, applied), as the learner's StepResult holds it.
Step = tuple[np.ndarray, np.ndarray, float, bool]


def make_member(lrn: Learner, cls: type) -> Learner | None:
    """The linear member of an MLP learner (None for a linear one, or with the member off)."""
    lm = lrn.learning.linear_member
    if not lm.enabled or lrn.model_cfg.kind != "mlp":
        return None
    off = lm.model_copy(update={"enabled": False})
    learning = lrn.learning.model_copy(update={"linear_member": off})
    linear = lrn.model_cfg.model_copy(update={"kind": "linear"})
    return cls(lrn.schema, linear, learning, lrn.device)


def served_step(lrn: Learner, own: Any, X: np.ndarray, y: np.ndarray) -> Step:
    """The member learns the batch the MLP has just learned (``own``, its StepResult). Both
    predicted it before learning it; the member chosen before the batch answers for it, then
    the batch's errors update the choice."""
    other = lrn.member.learn_many(X, y)
    served = other if lrn.selection.chosen == 1 else own
    lrn.selection.update(own.errors, other.errors)
    return served.outputs, served.errors, own.loss, own.applied


def member_state(lrn: Learner) -> dict:
    """The checkpoint's member and selection (nothing without a member)."""
    if lrn.member is None:
        return {}
    return {"member": lrn.member.state_dict(), "selection": lrn.selection.state_dict()}


def load_member(lrn: Learner, state: dict) -> None:
    """The member's state; a checkpoint written without it (an older one, or with the member
    off) leaves a fresh member that starts from the loaded input scaling, and the MLP serving
    until the member has been judged (``learning.linear_member.min_events``)."""
    member = lrn.member
    if "member" in state:
        member.load_state_dict(state["member"])
        lrn.selection.load_state_dict(state.get("selection"))
        return
    fresh = type(lrn)(lrn.schema, member.model_cfg, member.learning, lrn.device)
    fresh.x_scaler.load_state_dict(lrn.x_scaler.state_dict())
    fresh.y_scaler.load_state_dict(lrn.y_scaler.state_dict())
    member.load_state_dict(fresh.state_dict())
    lrn.selection.load_state_dict(None)
