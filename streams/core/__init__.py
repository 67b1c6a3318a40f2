"""The pure scoring core: health model, per-account state, measures, scoring, alerts.

Imports nothing from Faust, Kafka or Redis and never reads the clock: ``now`` (epoch
seconds, UTC) is always a parameter.
"""
from .alerts import Alert, ComponentChange, explain
from .batch import score_all
from .engine import AccountUpdate, apply_events, current_score, last_score, needs_reevaluation, reevaluate
from .model import HealthModel
from .model_loader import ModelError, load_model, parse_model
from .scoring import AccountScore, ComponentScore
from .state import AccountState

__all__ = (
    "Alert", "ComponentChange", "explain", "score_all",
    "AccountUpdate", "apply_events", "current_score", "last_score", "needs_reevaluation", "reevaluate",
    "HealthModel", "ModelError", "load_model", "parse_model", "AccountScore", "ComponentScore",
    "AccountState", "DEFAULT_MODEL_PATH",
)

from pathlib import Path as _Path

DEFAULT_MODEL_PATH = _Path(__file__).resolve().parent.parent / "models" / "default.yaml"
