"""SERVE: is a caller stealing the model or probing its training records?

The detectors, one module each: `profile` (what the training data looks like), `monitor`
(per-key streaming tests), `statistics` (the statistics they share), `alarms` (what they report).
Every name is re-exported here: `from bastion.serve.detect import X` is the public path.
"""

from bastion.serve.detect.alarms import Alarm, AlarmKind
from bastion.serve.detect.monitor import DetectorConfig, KeyStatistics, QueryMonitor
from bastion.serve.detect.profile import PROFILE_SCHEMA, QUANTILE_LEVELS, TYPICAL_SCORE_LEVELS, TrainingProfile
from bastion.serve.detect.statistics import shapiro_w, shapiro_w_royston

__all__ = [
    "PROFILE_SCHEMA",
    "QUANTILE_LEVELS",
    "TYPICAL_SCORE_LEVELS",
    "Alarm",
    "AlarmKind",
    "DetectorConfig",
    "KeyStatistics",
    "QueryMonitor",
    "TrainingProfile",
    "shapiro_w",
    "shapiro_w_royston",
]
