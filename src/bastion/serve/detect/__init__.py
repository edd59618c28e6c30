"""SERVE: is a caller stealing the model or probing its training records?

One module per part, every public name re-exported here (`from bastion.serve.detect import X`
is the public path):

- `profile`: what the training data looks like (`TrainingProfile`), per feature and jointly
  (`mixture`: a Gaussian mixture; `distances`: rows' distances from it);
- `rows`: whether a request's rows are like the training data (`RowJudge`), before answering;
- `streams`: whether a key's, an account's, a network's or a model's rows hold more atypical
  ones than benign traffic does (`StreamWatch`), and which rows are repeats (`RepeatFilter`);
- `monitor`: per-key streaming tests of extraction and membership probing (`QueryMonitor`);
- `statistics`, `alarms`: what they share and what they report.
"""

from bastion.serve.detect.alarms import Alarm, AlarmKind
from bastion.serve.detect.monitor import DetectorConfig, KeyStatistics, QueryMonitor
from bastion.serve.detect.profile import (
    DEFAULT_FALSE_ALARM_RATE,
    PROFILE_SCHEMA,
    PROFILE_SCHEMA_V1,
    QUANTILE_LEVELS,
    TYPICAL_SCORE_LEVELS,
    TrainingProfile,
)
from bastion.serve.detect.rows import RowFlags, RowJudge
from bastion.serve.detect.statistics import shapiro_w, shapiro_w_royston
from bastion.serve.detect.streams import RepeatFilter, StreamConfig, StreamStatistics, StreamWatch

__all__ = [
    "DEFAULT_FALSE_ALARM_RATE",
    "PROFILE_SCHEMA",
    "PROFILE_SCHEMA_V1",
    "QUANTILE_LEVELS",
    "TYPICAL_SCORE_LEVELS",
    "Alarm",
    "AlarmKind",
    "DetectorConfig",
    "KeyStatistics",
    "QueryMonitor",
    "RepeatFilter",
    "RowFlags",
    "RowJudge",
    "StreamConfig",
    "StreamStatistics",
    "StreamWatch",
    "TrainingProfile",
    "shapiro_w",
    "shapiro_w_royston",
]
