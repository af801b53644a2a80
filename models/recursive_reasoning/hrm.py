"""HRM under the name the TRM repository gives it (``recursive_reasoning.hrm@...``, ``arch=hrm``).

Same class as :mod:`models.hrm.hrm_act_v1`, so checkpoints and configs from either repo load.
"""
from models.hrm.hrm_act_v1 import (  # noqa: F401
    HierarchicalReasoningModel_ACTV1,
    HierarchicalReasoningModel_ACTV1_Inner,
    HierarchicalReasoningModel_ACTV1Carry,
    HierarchicalReasoningModel_ACTV1Config,
    HierarchicalReasoningModel_ACTV1InnerCarry,
)
