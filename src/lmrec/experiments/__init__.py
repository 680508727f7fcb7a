"""A/B experiments: configuration and assignment (`config`), statistics (`stats`), reports
over the store's exposures and feedback (`report`), and the replay simulator (`simulate`).

The service (`lmrec.service.experiments`) and the CLI (`lmrec experiment ...`) use the same
`ExperimentConfig` and the same `report`.
"""

from lmrec.experiments.config import Arm, ExperimentConfig, assign, bucket
from lmrec.experiments.stats import msprt, srm_check, wilson

__all__ = ["Arm", "ExperimentConfig", "assign", "bucket", "msprt", "srm_check", "wilson"]
