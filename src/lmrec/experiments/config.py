"""`ExperimentConfig`: what an A/B experiment is, and the deterministic assignment of users.

A user is bucketed by a salted hash of (salt, experiment name, user id): the same user lands in
the same arm on every request, in every process, on every machine, and two experiments with
different names (or salts) split users independently of each other.
"""

from __future__ import annotations

__all__ = ["Arm", "ExperimentConfig", "assign", "bucket"]

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from lmrec.errors import LmrecError

Name = str


class Arm(BaseModel):
    """One arm: a loaded model version (or None: the service's active one) and its share."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: str | None = Field(None, max_length=255, description="model version of this arm")
    share: float = Field(gt=0, le=1, description="share of the traffic (shares add up to 1)")


class ExperimentConfig(BaseModel):
    """An A/B experiment: arms with traffic shares, a population, a window and a stop rule."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Unique name; part of the assignment hash."""
    arms: list[Arm] = Field(min_length=2, max_length=10)
    """The first arm is the control."""
    salt: str = Field("lmrec", max_length=64)
    """Hash salt: change it to reshuffle users between arms."""
    population: Literal["all", "new", "known"] = "all"
    """Who enters: everyone, only users the store did not know at the start, or only known ones."""
    segment: dict[str, str | int | float | bool] | None = None
    """Only users whose stored attributes have these values (anonymous requests never enter)."""
    start: float | None = None
    """Unix seconds (None: when created)."""
    stop: float | None = None
    """Unix seconds after which no one is assigned any more (None: until stopped)."""
    window_seconds: float = Field(24 * 3600.0, gt=0)
    """Feedback on an exposed item counts for the exposure within this many seconds."""
    success_events: list[str] = Field(default_factory=lambda: ["click", "cart", "purchase"])
    """Events that count as a click (the CTR's numerator)."""
    conversion_events: list[str] = Field(default_factory=lambda: ["purchase"])
    """Events that count as a conversion."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    """Type-I error of the sequential test (always valid under continuous monitoring)."""
    tau: float = Field(0.05, gt=0, le=1)
    """Standard deviation of the mSPRT's normal mixture over the CTR difference: the size of
    the effect the test is most sensitive to."""
    srm_alpha: float = Field(0.001, gt=0, lt=0.5)
    """A sample-ratio mismatch is flagged when the chi-square p-value is below this."""
    min_exposures: int = Field(100, ge=0)
    """The stop rule waits for at least this many exposures per arm."""
    _models: dict[str, str | None] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        total = sum(a.share for a in self.arms)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"arm shares must add up to 1, got {total:g}")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("stop must be after start")
        return self

    @classmethod
    def parse(cls, data: dict | str | Path, where: str = "experiment") -> ExperimentConfig:
        """From a dict, a JSON string or a JSON file; errors say what is wrong and where."""
        if isinstance(data, Path) or (isinstance(data, str) and not data.lstrip().startswith("{")):
            path = Path(data)
            if not path.is_file():
                raise LmrecError(f"{where}: no such file {path}")
            where, data = str(path), path.read_text()
        try:
            if isinstance(data, str):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            why = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
            )
            raise LmrecError(f"{where}: invalid experiment: {why}") from None

    def started(self, now: float | None = None) -> ExperimentConfig:
        """A copy with `start` set (now) when it is not."""
        if self.start is not None:
            return self
        return self.model_copy(update={"start": time.time() if now is None else now})

    def running(self, now: float) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)

    def model_of(self, arm: str) -> str | None:
        """The model version of an arm (None: the active one)."""
        if self._models is None:
            self._models = {a.name: a.model for a in self.arms}
        return self._models[arm]

    def dumps(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


def bucket(salt: str, experiment: str, unit: str) -> float:
    """A uniform number in [0, 1) from a salted SHA-256 of (salt, experiment, unit)."""
    h = hashlib.sha256(f"{salt}\x1f{experiment}\x1f{unit}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign(config: ExperimentConfig, unit: str) -> str:
    """The arm of a user (or session) id: by cumulative shares over `bucket`."""
    x = bucket(config.salt, config.name, unit)
    acc = 0.0
    for arm in config.arms:
        acc += arm.share
        if x < acc:
            return arm.name
    return config.arms[-1].name  # rounding of shares that add up to 1 - 1e-12
