"""Checks of user-set values where they enter, each naming the gin binding at fault.

`ConfigError` is the one exception type for a user's configuration mistake: train.py
prints its message as one paragraph (exit status 2) instead of a traceback.
"""
import math
import numbers
import os
from typing import Optional


class ConfigError(ValueError):
  """A user-facing configuration problem, reported before anything is written."""


def _number(binding: str, value) -> float:
  if isinstance(value, bool):
    raise ConfigError(f"`{binding}` must be a number, got {value!r}.")
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise ConfigError(f"`{binding}` must be a number, got {value!r}.") from None
  if math.isnan(number):
    raise ConfigError(f"`{binding}` must be a number, got {value!r}.")
  return number


def check_positive(binding: str, value) -> None:
  """value > 0 and finite (learning rates, epsilons, temperatures)."""
  number = _number(binding, value)
  if not 0 < number < math.inf:
    raise ConfigError(f"`{binding}` must be a positive finite number, got {value!r}.")


def check_learning_rates(binding: str, values) -> list[float]:
  """A non-empty list of distinct positive learning rates, or ConfigError naming it."""
  if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
    raise ConfigError(f"`{binding}` = {values!r}: expected a list of learning rates.")
  values = list(values)
  if not values:
    raise ConfigError(f"`{binding}` is empty: give at least one learning rate.")
  for value in values:
    check_positive(binding, value)
  rates = [float(v) for v in values]
  if len(set(rates)) != len(rates):
    raise ConfigError(f"`{binding}` = {values!r} repeats a learning rate.")
  return rates


def check_int_at_least(binding: str, value, low: int = 1) -> None:
  """An integer >= low (batch sizes, capacities, periods, counts)."""
  integral = isinstance(value, numbers.Integral) or (
      isinstance(value, float) and value.is_integer())
  if isinstance(value, bool) or not integral:
    raise ConfigError(f"`{binding}` must be an integer >= {low}, got {value!r}.")
  if value < low:
    raise ConfigError(f"`{binding}` must be >= {low}, got {value!r}.")


def check_in_range(binding: str, value, low: float, high: float, *,
                   low_open: bool = False, high_open: bool = False,
                   meaning: Optional[str] = None) -> None:
  """low <= value <= high, with open ends where asked (fractions, discounts, rates)."""
  number = _number(binding, value)
  above = number > low if low_open else number >= low
  below = number < high if high_open else number <= high
  if not (above and below):
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    what = f" ({meaning})" if meaning else ""
    raise ConfigError(f"`{binding}` must be in {interval}{what}, got {value!r}.")


def check_writable_dir(path: str, flag: str, purpose: str) -> None:
  """ConfigError unless `path` (the value of `flag`) is given and could be created and
  written to. Nothing is created: its nearest existing ancestor must be a writable
  directory (local paths; remote ones such as gs:// are checked when first written)."""
  if not path:
    raise ConfigError(f"{flag} is required: {purpose}.")
  if "://" in path:
    return
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"{flag}={path} cannot be created: {existing} is a file, not a "
                      "directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"{flag}={path} cannot be written: {existing} is not writable "
                      "(permissions or a read-only file system).")


def error_message(error: BaseException) -> str:
  """The error's text without the context lines gin appends to it ("In call to
  configurable ..."): what the commands print after "error: "."""
  lines = str(error).splitlines()
  return "\n".join(l for l in lines if not l.strip().startswith("In call to configurable"))
