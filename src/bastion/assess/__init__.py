"""ASSESS: how a model fails, and what it costs to steal.

The first piece is the extraction cost (`measure_extraction_cost`): how many answers an
outside attacker needs to copy the model, the number quotas and account budgets are set from.
"""

from __future__ import annotations

from bastion.assess.extraction import AttackCurve, ExtractionCost, measure_extraction_cost

__all__ = ["AttackCurve", "ExtractionCost", "measure_extraction_cost"]
