"""Evaluation that matches the literature: full-ranking metrics, protocols, significance tests,
reports and plots.

```python
from lmrec.evaluation import evaluate, paired_test, bootstrap_ci
res = evaluate(model, split, on="test", k=10)          # full ranking, history items excluded
res.summary()        # {"ndcg@10": ..., "recall@10": ..., ..., "users": n}
res.per_user         # {"ndcg@10": (n,) array, ...} aligned with res.users
paired_test(res_a, res_b, metric="ndcg@10", test="wilcoxon")
bootstrap_ci(res.per_user["ndcg@10"])
run_protocol(["popularity", "ease"], dataset, protocol="loo", k=10)
evaluate(model, split, breakdown=("popularity", "history")).breakdown  # lmrec.evaluation.breakdown
```
"""

from __future__ import annotations

__all__ = [
    "EvalResult",
    "ProtocolResult",
    "bootstrap_ci",
    "evaluate",
    "leave_one_out_metrics",
    "paired_test",
    "rating_metrics",
    "run_protocol",
]

from lmrec.evaluation.protocols import ProtocolResult, run_protocol
from lmrec.evaluation.runner import EvalResult, evaluate, leave_one_out_metrics, rating_metrics
from lmrec.evaluation.stats import bootstrap_ci, paired_test
