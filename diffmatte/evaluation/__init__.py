"""Official-equivalent Composition-1k evaluation: SAD, MSE, Grad and Conn."""

from diffmatte.evaluation.evaluator import (
    EvaluationError,
    FolderEvaluation,
    MattingEvaluator,
    evaluate_folders,
    read_matte,
    save_results,
)
from diffmatte.evaluation.metrics import (
    METRIC_NAMES,
    MetricInputError,
    compute_all,
    compute_conn,
    compute_grad,
    compute_mse,
    compute_sad,
)
